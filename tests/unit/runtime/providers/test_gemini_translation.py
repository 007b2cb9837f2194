"""OpenAI <-> Gemini translation, without a network: requests, answers, errors."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from google.genai import errors as genai_errors
from google.genai import types

from atrium.core.errors import (
    InvalidRequestError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.core.settings import GeminiModel
from atrium.runtime.backends.gemini import _answer, _error, request_params
from atrium.runtime.schema import ChatCompletionRequest


def chat(*messages: dict[str, Any], **fields: Any) -> ChatCompletionRequest:
    turns = list(messages) or [{"role": "user", "content": "hello"}]
    return ChatCompletionRequest.model_validate({"model": "gemini", "messages": turns, **fields})


def test_an_empty_request_sets_no_generation_fields() -> None:
    contents, config = request_params(chat())
    assert [c.model_dump(exclude_none=True) for c in contents] == [
        {"role": "user", "parts": [{"text": "hello"}]}
    ]
    assert config.model_dump(exclude_none=True, exclude_defaults=True) == {
        "automatic_function_calling": {"disable": True}
    }


def test_a_bad_thought_signature_is_a_400() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
        "extra_content": {"google": {"thought_signature": "not base64!"}},
    }
    with pytest.raises(InvalidRequestError):
        request_params(chat({"role": "assistant", "tool_calls": [call]}))


def test_a_thought_signature_round_trips_as_bytes() -> None:
    signature = base64.b64encode(b"\x00\x01sig").decode()
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a": 1}'},
        "extra_content": {"google": {"thought_signature": signature}},
    }
    contents, _ = request_params(
        chat({"role": "user", "content": "go"}, {"role": "assistant", "tool_calls": [call]})
    )
    (part,) = contents[1].parts or []
    assert part.thought_signature == b"\x00\x01sig"
    assert part.function_call == types.FunctionCall(id="c1", name="f", args={"a": 1})


def test_an_answer_leaves_thoughts_out_of_the_text() -> None:
    response = types.GenerateContentResponse.model_validate(
        {
            "response_id": "r1",
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "thinking...", "thought": True}, {"text": "Hi"}],
                    },
                    "finish_reason": "STOP",
                }
            ],
            "usage_metadata": {
                "prompt_token_count": 4,
                "tool_use_prompt_token_count": 1,
                "candidates_token_count": 2,
                "thoughts_token_count": 3,
            },
        }
    )
    answer = _answer(response)
    assert (answer.id, answer.text, answer.finish_reason) == ("r1", "Hi", "stop")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 5)


def test_an_empty_response_is_an_empty_stop() -> None:
    answer = _answer(types.GenerateContentResponse())
    assert (answer.text, answer.tool_calls, answer.finish_reason) == ("", [], "stop")
    assert answer.usage.total_tokens == 0


def _api_error(code: int, body: dict[str, Any]) -> genai_errors.APIError:
    return (
        genai_errors.ClientError(code, body, None)
        if code < 500
        else genai_errors.ServerError(code, body, None)
    )


def test_api_errors_map_by_status() -> None:
    not_found = _error(
        _api_error(404, {"error": {"code": 404, "message": "no model", "status": "NOT_FOUND"}})
    )
    server = _error(_api_error(500, {"error": {"code": 500, "message": "x", "status": "INTERNAL"}}))

    assert isinstance(not_found, UpstreamStatusError)
    assert (not_found.upstream_status, not_found.message) == (404, "no model")
    assert type(server) is UpstreamError


def test_an_invalid_key_is_not_the_callers_400() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
    body = {"error": {"code": 400, "message": "API key not valid.", "details": [info]}}
    error = _error(_api_error(400, body))
    assert type(error) is UpstreamError
    assert error.status == 502


@pytest.mark.parametrize(("delay", "retry_after"), [("30s", "30"), ("0.2s", "1"), ("soon", None)])
def test_retry_info_becomes_retry_after(delay: str, retry_after: str | None) -> None:
    detail = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    body = {"error": {"code": 429, "message": "quota", "details": [detail]}}
    error = _error(_api_error(429, body))
    assert isinstance(error, UpstreamStatusError)
    assert error.headers.get("retry-after") == retry_after


def test_transport_errors() -> None:
    request = httpx.Request("POST", "https://generativelanguage.googleapis.com/v1/x")
    assert isinstance(_error(httpx.ReadTimeout("slow", request=request)), UpstreamTimeoutError)
    refused = _error(httpx.ConnectError("refused", request=request))
    assert type(refused) is UpstreamError
    assert type(_error(genai_errors.UnknownApiResponseError("bad json"))) is UpstreamError


def test_settings_check_that_auth_fits_the_api() -> None:
    with pytest.raises(ValueError, match="api_key"):
        GeminiModel.model_validate({"model": "gemini-2.5-flash"})
    with pytest.raises(ValueError, match="Vertex"):
        GeminiModel.model_validate({"model": "m", "api_key": "k", "project": "p"})
    vertex = GeminiModel.model_validate(
        {"model": "m", "vertexai": True, "project": "p", "location": "us-central1"}
    )
    assert vertex.api_key is None
