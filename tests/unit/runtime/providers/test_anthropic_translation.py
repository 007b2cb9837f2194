"""OpenAI <-> Anthropic translation, without a network: requests, answers, events, errors."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from atrium.core.errors import (
    InvalidRequestError,
    UnsupportedError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.core.settings import AnthropicModel
from atrium.runtime.backends.anthropic import _answer, _error, _StreamTranslator, request_params
from atrium.runtime.schema import ChatCompletionRequest

SPEC = AnthropicModel.model_validate(
    {"model": "claude-sonnet-4-6", "api_key": "k", "default_max_tokens": 321}
)
EVENTS = TypeAdapter[RawMessageStreamEvent](RawMessageStreamEvent)


def chat(*messages: dict[str, Any], **fields: Any) -> ChatCompletionRequest:
    turns = list(messages) or [{"role": "user", "content": "hello"}]
    return ChatCompletionRequest.model_validate({"model": "claude", "messages": turns, **fields})


def test_max_tokens_defaults_from_the_settings() -> None:
    params = request_params(chat(), SPEC)
    assert params == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 321,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }


def test_tool_results_and_a_following_user_message_share_one_user_turn() -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    params = request_params(
        chat(
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "done"}]},
            {"role": "user", "content": "and now?"},
        ),
        SPEC,
    )
    assert params["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "done"},
                {"type": "text", "text": "and now?"},
            ],
        },
    ]


def test_a_tool_message_needs_its_call_id() -> None:
    with pytest.raises(InvalidRequestError):
        request_params(chat({"role": "tool", "content": "x"}), SPEC)


def test_a_forced_function_without_parallel_calls() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    choice = {"type": "function", "function": {"name": "f"}}
    params = request_params(chat(tools=[tool], tool_choice=choice, parallel_tool_calls=False), SPEC)
    assert params["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert params["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}


def test_tool_choice_none_never_carries_the_parallel_flag() -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    params = request_params(chat(tools=[tool], tool_choice="none", parallel_tool_calls=False), SPEC)
    assert params["tool_choice"] == {"type": "none"}


def test_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in request_params(chat(tool_choice="required"), SPEC)


def test_json_object_is_refused_with_a_pointer_to_json_schema() -> None:
    with pytest.raises(UnsupportedError) as caught:
        request_params(chat(response_format={"type": "json_object"}), SPEC)
    assert caught.value.param == "response_format"
    assert "json_schema" in caught.value.message


def test_json_schema_is_made_strict_by_the_sdks_adapter() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    output = request_params(chat(response_format=fmt), SPEC)["output_config"]
    strict = output["format"]["schema"]
    assert output["format"]["type"] == "json_schema"
    assert strict["additionalProperties"] is False
    assert "minimum" not in strict["properties"]["n"]


def test_a_schema_the_adapter_cannot_read_is_a_400() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"title": "no type"}}}
    with pytest.raises(InvalidRequestError) as caught:
        request_params(chat(response_format=fmt), SPEC)
    assert caught.value.param == "response_format"


def test_an_answer_skips_thinking_blocks() -> None:
    message = Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Hi"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 2},
        }
    )
    answer = _answer(message)
    assert (answer.id, answer.text, answer.finish_reason) == ("msg_1", "Hi", "tool_calls")
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [("t1", "f", {"a": 1})]
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 4)


def test_stream_events_without_an_openai_counterpart_are_skipped() -> None:
    translator = _StreamTranslator("claude")
    raw = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "usage": {"input_tokens": 5, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "x"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 9, "input_tokens": 6},
        },
        {"type": "message_stop"},
    ]
    out = [c for event in raw for c in translator.see(EVENTS.validate_python(event))]
    chunks = [orjson.loads(c.data) for c in out]
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {},
    ]
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 9, "total_tokens": 15}
    assert translator.done


def _status_error(
    status: int, body: object, headers: dict[str, str] | None = None
) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return anthropic.APIStatusError("failed", response=response, body=body)


def test_sdk_errors_map_to_atrium_errors() -> None:
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    body = {"type": "error", "error": {"type": "not_found_error", "message": "model: x"}}

    not_found = _error(_status_error(404, body))
    mid_stream = _error(
        _status_error(200, {"type": "error", "error": {"type": "overloaded_error"}})
    )

    assert isinstance(not_found, UpstreamStatusError)
    assert (not_found.upstream_status, not_found.message) == (404, "model: x")
    assert type(mid_stream) is UpstreamError
    assert isinstance(_error(anthropic.APITimeoutError(request)), UpstreamTimeoutError)
    connection = _error(anthropic.APIConnectionError(request=request))
    assert type(connection) is UpstreamError
