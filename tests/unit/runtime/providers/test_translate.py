"""The OpenAI-side helpers shared by the provider backends."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from atrium.core.errors import (
    InvalidRequestError,
    UnsupportedError,
    UpstreamError,
    UpstreamStatusError,
)
from atrium.runtime.backends._translate import (
    Answer,
    ChunkWriter,
    ToolCall,
    ToolChoice,
    chat_completion,
    check_supported,
    content_text,
    conversation,
    function_tools,
    json_schema_of,
    parallel_tool_calls,
    parse_arguments,
    status_error,
    system_text,
    tool_call_names,
    tool_choice_of,
)
from atrium.runtime.schema import ChatCompletionRequest, ChatMessage, Usage


def chat(*messages: dict[str, Any], **fields: Any) -> ChatCompletionRequest:
    turns = list(messages) or [{"role": "user", "content": "hello"}]
    return ChatCompletionRequest.model_validate({"model": "m", "messages": turns, **fields})


def message(**fields: Any) -> ChatMessage:
    return ChatMessage.model_validate(fields)


def test_n_above_one_is_unsupported() -> None:
    check_supported(chat(n=1))
    with pytest.raises(UnsupportedError) as caught:
        check_supported(chat(n=2))
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, "n", "unsupported")


def test_system_text_joins_system_and_developer_messages_in_order() -> None:
    request = chat(
        {"role": "developer", "content": "A"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "B"}]},
    )
    assert system_text(request.messages) == "A\n\nB"
    assert system_text(chat().messages) is None
    assert [m.role for m in conversation(request.messages)] == ["user"]


def test_an_assistant_turn_that_says_nothing_is_left_out() -> None:
    request = chat(
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "still there?"},
    )
    assert [m.role for m in conversation(request.messages)] == ["user", "user"]


def test_the_legacy_function_role_is_refused() -> None:
    with pytest.raises(UnsupportedError):
        conversation(chat({"role": "function", "name": "f", "content": "x"}).messages)


def test_content_text_joins_text_parts_and_refuses_others() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert content_text(message(role="user", content=parts)) == "ab"
    assert content_text(message(role="assistant", content=None)) == ""
    image = {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
    with pytest.raises(UnsupportedError) as caught:
        content_text(message(role="user", content=[image]))
    assert caught.value.param == "messages"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [('{"a": 1}', {"a": 1}), ("", {}), (None, {}), ({"a": 2}, {"a": 2})],
)
def test_parse_arguments(arguments: object, expected: dict[str, Any]) -> None:
    assert parse_arguments(arguments) == expected


@pytest.mark.parametrize("arguments", ["[1, 2]", "{not json", "3"])
def test_arguments_that_are_not_an_object_are_refused(arguments: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_arguments(arguments)


def test_tool_call_names_come_from_assistant_messages() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    request = chat({"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": calls})
    assert tool_call_names(request.messages) == {"c1": "f", "c2": "g"}


def test_a_tool_call_without_an_id_is_refused() -> None:
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    with pytest.raises(InvalidRequestError):
        tool_call_names(chat({"role": "assistant", "tool_calls": [call]}).messages)


def test_function_tools_default_to_an_empty_object_schema() -> None:
    (tool,) = function_tools(chat(tools=[{"type": "function", "function": {"name": "f"}}]))
    assert (tool.name, tool.description) == ("f", None)
    assert tool.parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    "tool",
    [{"type": "code_interpreter"}, {"type": "function", "function": {"description": "no name"}}],
)
def test_tools_that_do_not_translate_are_refused(tool: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        function_tools(chat(tools=[tool]))
    assert caught.value.param == "tools"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        ({"type": "function", "function": {"name": "f"}}, ToolChoice("function", "f")),
    ],
)
def test_tool_choice(choice: object, expected: ToolChoice | None) -> None:
    assert tool_choice_of(chat(tool_choice=choice)) == expected


@pytest.mark.parametrize("choice", ["any", {"type": "function"}, {"type": "tool", "name": "f"}])
def test_unknown_tool_choices_are_refused(choice: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        tool_choice_of(chat(tool_choice=choice))
    assert caught.value.param == "tool_choice"


def test_parallel_tool_calls_defaults_to_true() -> None:
    assert parallel_tool_calls(chat())
    assert not parallel_tool_calls(chat(parallel_tool_calls=False))


def test_json_schema_of() -> None:
    schema = {"type": "object"}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert json_schema_of(chat(response_format=fmt)) == schema
    assert json_schema_of(chat(response_format={"type": "json_object"})) is None
    with pytest.raises(InvalidRequestError):
        json_schema_of(chat(response_format={"type": "json_schema", "json_schema": {}}))


def test_a_completion_with_tool_calls_has_null_content() -> None:
    call = ToolCall("c1", "f", {"x": 1})
    answer = Answer("id-1", "", [call], "tool_calls", Usage(prompt_tokens=3, completion_tokens=2))

    body = chat_completion("public-name", answer)

    assert body["model"] == "public-name"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
        ],
    }
    assert body["usage"]["total_tokens"] == 5


def test_chunk_writer_shapes() -> None:
    writer = ChunkWriter("public-name", "id-1")
    events = [
        writer.role(),
        writer.content("Hi"),
        writer.tool_call_start(0, "c1", "f", {"google": {"thought_signature": "c2ln"}}),
        writer.tool_call_arguments(0, '{"x"'),
        writer.finish("tool_calls"),
        writer.usage(Usage(prompt_tokens=3, completion_tokens=2)),
    ]
    chunks = [orjson.loads(event.data) for event in events]

    assert {(c["id"], c["object"], c["model"]) for c in chunks} == {
        ("id-1", "chat.completion.chunk", "public-name")
    }
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[2]["tool_calls"] == [
        {
            "index": 0,
            "id": "c1",
            "type": "function",
            "function": {"name": "f", "arguments": ""},
            "extra_content": {"google": {"thought_signature": "c2ln"}},
        }
    ]
    assert deltas[3] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]}
    assert chunks[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[5]["choices"] == []
    assert [e.usage_only for e in events] == [False] * 5 + [True]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (404, "invalid_request_error"),
        (413, "invalid_request_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
    ],
)
def test_statuses_the_caller_can_act_on_pass_through(status: int, kind: str) -> None:
    error = status_error("p", status, "why", code="C", retry_after="5")
    assert isinstance(error, UpstreamStatusError)
    assert error.upstream_status == status
    assert error.to_openai() == {
        "error": {"message": "why", "type": kind, "param": None, "code": "C"}
    }
    assert error.headers == {"retry-after": "5"}


@pytest.mark.parametrize("status", [401, 402, 403, 408, 500, 502, 503, 529])
def test_other_statuses_are_the_gateways_502(status: int) -> None:
    error = status_error("p", status, "secret detail", code="C")
    assert type(error) is UpstreamError
    assert error.status == 502
    assert "secret detail" not in error.message
