"""The Gemini backend through the official SDK, against a fake Gemini API on loopback."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atrium.core.errors import (
    InvalidRequestError,
    UnsupportedError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.observability.config import TracingSettings
from atrium.observability.tracing import Tracing
from atrium.runtime.backends import default_factories
from atrium.runtime.backends.gemini import GeminiBackend
from atrium.runtime.base import StreamEvent
from atrium.runtime.schema import ChatCompletionRequest
from tests.integration.providers.conftest import GEMINI_KEY, gemini_spec
from tests.integration.providers.fake_gemini import (
    Failure,
    FakeGemini,
    FunctionCall,
    MidStreamError,
    Reply,
    Stall,
)
from tests.integration.providers.loopback import LoopbackServer

pytestmark = pytest.mark.integration

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SIGNATURE = base64.b64encode(b"opaque thought signature").decode()


def chat(*messages: dict[str, Any], **fields: Any) -> ChatCompletionRequest:
    """A chat request; one user message when none are given."""
    turns = list(messages) or [{"role": "user", "content": "hello"}]
    return ChatCompletionRequest.model_validate({"model": "gemini", "messages": turns, **fields})


async def chunks(events: AsyncIterator[StreamEvent]) -> list[dict[str, Any]]:
    """Every streamed chunk, decoded."""
    return [orjson.loads(event.data) async for event in events]


async def test_plain_chat_is_translated_both_ways(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    gemini_api.will(Reply(text="Hi there!", prompt_tokens=9, candidates_tokens=4))

    answer = await gemini.chat(chat())

    assert answer["object"] == "chat.completion"
    assert answer["model"] == "gemini"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    sent = gemini_api.requests[-1]
    assert sent.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
    assert "systemInstruction" not in sent.body
    assert "tools" not in sent.body


async def test_system_and_developer_messages_become_the_system_instruction(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    await gemini.chat(
        chat(
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "hello"},
        )
    )

    assert gemini_api.last["systemInstruction"] == {
        "parts": [{"text": "Be brief.\n\nAnswer in French."}]
    }
    assert [c["role"] for c in gemini_api.last["contents"]] == ["user"]


async def test_a_multi_turn_conversation_maps_roles_and_merges_repeats(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    await gemini.chat(
        chat(
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Hello Ada."},
            {"role": "user", "content": "What is my name?"},
            {"role": "user", "content": "One word."},
        )
    )

    assert gemini_api.last["contents"] == [
        {"role": "user", "parts": [{"text": "My name is Ada."}]},
        {"role": "model", "parts": [{"text": "Hello Ada."}]},
        {"role": "user", "parts": [{"text": "What is my name?"}, {"text": "One word."}]},
    ]


async def test_generation_parameters(gemini: GeminiBackend, gemini_api: FakeGemini) -> None:
    gemini_api.will(Reply(text="1, 2", finish_reason="MAX_TOKENS"))

    answer = await gemini.chat(
        chat(
            max_completion_tokens=5,
            temperature=1.5,
            top_p=0.9,
            stop=["4", "END"],
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
        )
    )

    assert gemini_api.last["generationConfig"] == {
        "maxOutputTokens": 5,
        "temperature": 1.5,
        "topP": 0.9,
        "stopSequences": ["4", "END"],
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
    }
    assert answer["choices"][0]["finish_reason"] == "length"


async def test_thinking_tokens_count_as_completion_tokens(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    gemini_api.will(Reply(text="ok", prompt_tokens=5, candidates_tokens=2, thoughts_tokens=30))

    answer = await gemini.chat(chat())

    assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 32, "total_tokens": 37}


async def test_tools_are_declared_and_a_function_call_comes_back_in_openai_shape(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    call = FunctionCall("get_weather", {"city": "Paris"}, id="fc-1", thought_signature=SIGNATURE)
    gemini_api.will(Reply(function_calls=[call]))

    answer = await gemini.chat(chat(tools=[WEATHER_TOOL]))

    assert gemini_api.last["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather in a city.",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                }
            ]
        }
    ]
    assert "toolConfig" not in gemini_api.last
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "fc-1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            "extra_content": {"google": {"thought_signature": SIGNATURE}},
        }
    ]


async def test_a_call_without_an_id_gets_one(gemini: GeminiBackend, gemini_api: FakeGemini) -> None:
    gemini_api.will(Reply(function_calls=[FunctionCall("get_weather", {"city": "Oslo"})]))

    answer = await gemini.chat(chat(tools=[WEATHER_TOOL]))

    (call,) = answer["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert "extra_content" not in call


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
async def test_tool_choice(
    gemini: GeminiBackend, gemini_api: FakeGemini, tool_choice: object, expected: dict[str, object]
) -> None:
    await gemini.chat(chat(tools=[WEATHER_TOOL], tool_choice=tool_choice))

    assert gemini_api.last["toolConfig"] == {"functionCallingConfig": expected}


async def test_a_function_call_round_trip_recovers_names_and_signatures(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    # Two calls: one Gemini gave an id (sent back), one this gateway made up (not sent).
    gemini_api.will(Reply(function_calls=[FunctionCall("get_weather", {"city": "Paris"})]))
    first = await gemini.chat(chat({"role": "user", "content": "Paris?"}, tools=[WEATHER_TOOL]))
    local_id = first["choices"][0]["message"]["tool_calls"][0]["id"]
    gemini_api.will(Reply(text="Paris: 18°C, Oslo: 9°C."))
    calls = [
        {
            "id": "fc-1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            "extra_content": {"google": {"thought_signature": SIGNATURE}},
        },
        {
            "id": local_id,
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"city": "Oslo"}'},
        },
    ]

    answer = await gemini.chat(
        chat(
            {"role": "user", "content": "Weather in Paris, time in Oslo?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "fc-1", "content": '{"temperature": "18°C"}'},
            {"role": "tool", "tool_call_id": local_id, "content": "09:00"},
            tools=[WEATHER_TOOL],
        )
    )

    assert gemini_api.last["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {
                    "functionCall": {
                        "id": "fc-1",
                        "name": "get_weather",
                        "args": {"city": "Paris"},
                    },
                    "thoughtSignature": SIGNATURE,
                },
                {"functionCall": {"name": "get_time", "args": {"city": "Oslo"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "fc-1",
                        "name": "get_weather",
                        "response": {"temperature": "18°C"},
                    }
                },
                {"functionResponse": {"name": "get_time", "response": {"output": "09:00"}}},
            ],
        },
    ]
    assert answer["choices"][0]["message"]["content"] == "Paris: 18°C, Oslo: 9°C."


async def test_a_tool_message_for_an_unknown_call_is_refused(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await gemini.chat(
            chat(
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "nobody", "content": "x"},
            )
        )

    assert caught.value.param == "messages"
    assert gemini_api.requests == []


async def test_response_formats(gemini: GeminiBackend, gemini_api: FakeGemini) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}

    await gemini.chat(chat(response_format={"type": "json_object"}))
    as_object = gemini_api.last["generationConfig"]
    await gemini.chat(
        chat(
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
        )
    )
    as_schema = gemini_api.last["generationConfig"]

    assert as_object == {"responseMimeType": "application/json"}
    assert as_schema == {"responseMimeType": "application/json", "responseJsonSchema": schema}


async def test_streamed_text(gemini: GeminiBackend, gemini_api: FakeGemini) -> None:
    gemini_api.will(Reply(text="Hello there, Ada!", prompt_tokens=8, candidates_tokens=5))

    events = [event async for event in gemini.chat_stream(chat(stream=True))]

    sent = gemini_api.requests[-1]
    assert sent.path.endswith("/models/gemini-2.5-flash:streamGenerateContent")
    assert sent.query == "alt=sse"
    got = [orjson.loads(event.data) for event in events]
    assert len({c["id"] for c in got}) == 1
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in got[1:-2]] == ["Hello ", "there, ", "Ada!"]
    assert got[-2]["choices"][0]["finish_reason"] == "stop"
    assert got[-1]["choices"] == []
    assert got[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}
    assert events[-1].usage_only
    assert not any(event.usage_only for event in events[:-1])


async def test_streamed_function_calls(gemini: GeminiBackend, gemini_api: FakeGemini) -> None:
    gemini_api.will(
        Reply(
            text="Checking.",
            function_calls=[
                FunctionCall("get_weather", {"city": "Paris"}, id="fc-1"),
                FunctionCall("get_weather", {"city": "Oslo"}, id="fc-2"),
            ],
        )
    )

    got = await chunks(gemini.chat_stream(chat(stream=True, tools=[WEATHER_TOOL])))

    tool_deltas = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in got
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert tool_deltas == [
        {
            "index": 0,
            "id": "fc-1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"city":"Paris"}'}},
        {
            "index": 1,
            "id": "fc-2",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 1, "function": {"arguments": '{"city":"Oslo"}'}},
    ]
    assert got[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
    ],
)
async def test_finish_reasons(
    gemini: GeminiBackend, gemini_api: FakeGemini, finish: str, expected: str
) -> None:
    gemini_api.will(Reply(text="x", finish_reason=finish), Reply(text="x", finish_reason=finish))

    answer = await gemini.chat(chat())
    streamed = await chunks(gemini.chat_stream(chat(stream=True)))

    assert answer["choices"][0]["finish_reason"] == expected
    assert streamed[-2]["choices"][0]["finish_reason"] == expected


async def test_a_blocked_prompt_is_a_content_filter_finish(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    gemini_api.will(Reply(block_reason="SAFETY"), Reply(block_reason="SAFETY"))

    answer = await gemini.chat(chat())
    streamed = await chunks(gemini.chat_stream(chat(stream=True)))

    assert answer["choices"][0]["message"]["content"] == ""
    assert answer["choices"][0]["finish_reason"] == "content_filter"
    assert streamed[-2]["choices"][0]["finish_reason"] == "content_filter"


async def test_a_400_passes_on_with_the_providers_message(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    gemini_api.will(Failure(400, "INVALID_ARGUMENT", "Request contains an invalid argument."))

    with pytest.raises(UpstreamStatusError) as caught:
        await gemini.chat(chat())

    assert caught.value.upstream_status == 400
    assert caught.value.to_openai() == {
        "error": {
            "message": "Request contains an invalid argument.",
            "type": "invalid_request_error",
            "param": None,
            "code": "INVALID_ARGUMENT",
        }
    }


async def test_a_404_model_passes_on(gemini_server: tuple[FakeGemini, str]) -> None:
    backend = GeminiBackend("gemini", gemini_spec(gemini_server[1], model="no/such:model"))
    try:
        with pytest.raises(UpstreamStatusError) as caught:
            await backend.chat(chat())
    finally:
        await backend.close()

    assert caught.value.upstream_status == 404


async def test_a_429_keeps_retry_after_from_the_header_or_retry_info(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "6.2s"}
    gemini_api.will(
        Failure(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", headers={"retry-after": "11"}),
        Failure(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", details=[retry_info]),
    )

    with pytest.raises(UpstreamStatusError) as from_header:
        await gemini.chat(chat())
    with pytest.raises(UpstreamStatusError) as from_details:
        await anext(aiter(gemini.chat_stream(chat(stream=True))))

    assert from_header.value.upstream_status == 429
    assert from_header.value.headers == {"retry-after": "11"}
    assert from_details.value.headers == {"retry-after": "7"}
    assert from_details.value.to_openai()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("code", "status"),
    [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"), (500, "INTERNAL"), (503, "UNAVAILABLE")],
)
async def test_auth_failures_and_server_errors_are_502(
    gemini: GeminiBackend, gemini_api: FakeGemini, code: int, status: str
) -> None:
    gemini_api.will(Failure(code, status, "something went wrong"))

    with pytest.raises(UpstreamError) as caught:
        await gemini.chat(chat())

    assert caught.value.status == 502
    assert str(code) in caught.value.message


async def test_a_wrong_key_is_a_502_that_never_shows_the_key(
    gemini_server: tuple[FakeGemini, str],
) -> None:
    wrong_key = "AIza-wrong-" + "w" * 24
    backend = GeminiBackend("gemini", gemini_spec(gemini_server[1], api_key=wrong_key))
    try:
        with pytest.raises(UpstreamError) as caught:
            await backend.chat(chat())
    finally:
        await backend.close()

    assert caught.value.status == 502
    shown = orjson.dumps(caught.value.to_openai()).decode() + str(caught.value)
    assert wrong_key not in shown
    assert GEMINI_KEY not in shown


async def test_an_error_mid_stream_ends_it_with_a_502(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    gemini_api.will(MidStreamError(503, "UNAVAILABLE", "The model is overloaded."))
    events = gemini.chat_stream(chat(stream=True))

    got = [orjson.loads((await anext(events)).data) for _ in range(2)]
    with pytest.raises(UpstreamError) as caught:
        await anext(events)

    assert [c["choices"][0]["delta"] for c in got] == [
        {"role": "assistant", "content": ""},
        {"content": "partial "},
    ]
    assert caught.value.status == 502


async def test_vertex_ai_express_mode(gemini_server: tuple[FakeGemini, str]) -> None:
    fake, url = gemini_server
    fake.reset()
    backend = GeminiBackend("gemini", gemini_spec(url, vertexai=True))
    try:
        answer = await backend.chat(chat())
    finally:
        await backend.close()

    sent = fake.requests[-1]
    assert sent.path.endswith("/publishers/google/models/gemini-2.5-flash:generateContent")
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert answer["choices"][0]["message"]["content"] == "ok"


async def test_a_timeout_is_a_504(gemini: GeminiBackend, gemini_api: FakeGemini) -> None:
    gemini_api.will(Stall(2.0))

    with pytest.raises(UpstreamTimeoutError) as caught:
        await gemini.chat(chat())

    assert caught.value.status == 504


async def test_an_unreachable_api_is_a_502() -> None:
    with LoopbackServer(FakeGemini(GEMINI_KEY).app) as server:
        closed_url = server.url  # nothing listens there once the block ends
    backend = GeminiBackend("gemini", gemini_spec(closed_url))
    try:
        with pytest.raises(UpstreamError) as caught:
            await backend.chat(chat())
    finally:
        await backend.close()

    assert caught.value.status == 502
    assert not isinstance(caught.value, UpstreamTimeoutError)


async def test_n_above_one_is_refused_without_a_call(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    with pytest.raises(UnsupportedError) as caught:
        await gemini.chat(chat(n=3))

    assert (caught.value.status, caught.value.param) == (400, "n")
    assert gemini_api.requests == []


async def test_health_and_close(gemini_server: tuple[FakeGemini, str]) -> None:
    backend = default_factories()["gemini"]("gemini", gemini_spec(gemini_server[1]))

    assert isinstance(backend, GeminiBackend)
    assert (await backend.health()).ready
    await backend.close()
    assert not (await backend.health()).ready


async def test_the_current_spans_traceparent_goes_to_the_api(
    gemini: GeminiBackend, gemini_api: FakeGemini
) -> None:
    tracing = Tracing(TracingSettings(enabled=True), exporter=InMemorySpanExporter())
    gemini_api.will(Reply(text="one"), Reply(text="two"), Reply(text="three"))
    try:
        with tracing.span("call") as span:
            await gemini.chat(chat())
            [_ async for _ in gemini.chat_stream(chat(stream=True))]
            ids = span.get_span_context()
        await gemini.chat(chat())  # outside any span: nothing to pass on
    finally:
        tracing.shutdown()
    expected = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
    sent = gemini_api.requests
    assert [r.headers.get("traceparent") for r in sent] == [expected, expected, None]
    # The per-request options add a header and change nothing else (key, address).
    assert {r.headers["x-goog-api-key"] for r in sent} == {GEMINI_KEY}
    assert sent[1].path.endswith(":streamGenerateContent")
