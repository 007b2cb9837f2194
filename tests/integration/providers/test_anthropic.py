"""The Anthropic backend through the official SDK, against a fake Messages API on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atrium.core.errors import (
    UnsupportedError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.observability.config import TracingSettings
from atrium.observability.tracing import Tracing
from atrium.runtime.backends import default_factories
from atrium.runtime.backends.anthropic import AnthropicBackend
from atrium.runtime.base import StreamEvent
from atrium.runtime.schema import ChatCompletionRequest
from tests.integration.providers.conftest import ANTHROPIC_KEY, anthropic_spec
from tests.integration.providers.fake_anthropic import (
    Failure,
    FakeAnthropic,
    MidStreamError,
    Reply,
    Stall,
    ToolUse,
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


def chat(*messages: dict[str, Any], **fields: Any) -> ChatCompletionRequest:
    """A chat request; one user message when none are given."""
    turns = list(messages) or [{"role": "user", "content": "hello"}]
    return ChatCompletionRequest.model_validate({"model": "claude", "messages": turns, **fields})


async def chunks(events: AsyncIterator[StreamEvent]) -> list[dict[str, Any]]:
    """Every streamed chunk, decoded."""
    return [orjson.loads(event.data) async for event in events]


async def test_plain_chat_is_translated_both_ways(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Reply(text="Hi there!", input_tokens=9, output_tokens=4))

    answer = await claude.chat(chat())

    assert answer["object"] == "chat.completion"
    assert answer["model"] == "claude"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    sent = anthropic_api.requests[-1]
    assert sent.body == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }
    assert sent.headers["anthropic-version"]


async def test_system_and_developer_messages_become_the_system_prompt(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    await claude.chat(
        chat(
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "hello"},
        )
    )

    assert anthropic_api.last["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in anthropic_api.last["messages"]] == ["user"]


async def test_a_multi_turn_conversation_keeps_its_turns_and_merges_repeats(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    await claude.chat(
        chat(
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Hello Ada."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is "},
                    {"type": "text", "text": "my name?"},
                ],
            },
            {"role": "user", "content": "Answer in one word."},
        )
    )

    assert anthropic_api.last["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "My name is Ada."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is my name?"},
                {"type": "text", "text": "Answer in one word."},
            ],
        },
    ]


async def test_stop_sequences_and_user_translate_and_sampling_knobs_are_ignored(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Reply(text="1, 2, 3", stop_reason="stop_sequence"))

    answer = await claude.chat(
        chat(
            max_tokens=50,
            temperature=0.2,
            top_p=0.9,
            presence_penalty=0.5,
            seed=7,
            stop=["4", "END"],
            user="user-7",
        )
    )

    body = anthropic_api.last
    assert body["max_tokens"] == 50
    # The Messages API takes no sampling knobs (the fake refuses unknown fields).
    assert not {"temperature", "top_p", "presence_penalty", "seed"} & set(body)
    assert body["stop_sequences"] == ["4", "END"]
    assert body["metadata"] == {"user_id": "user-7"}
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_max_completion_tokens_wins_and_max_tokens_stops_as_length(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Reply(text="1, 2", stop_reason="max_tokens"))

    answer = await claude.chat(chat(max_tokens=500, max_completion_tokens=5))

    assert anthropic_api.last["max_tokens"] == 5
    assert answer["choices"][0]["finish_reason"] == "length"


async def test_cache_reads_count_as_prompt_tokens(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Reply(text="ok", input_tokens=5, cache_read_input_tokens=100))

    answer = await claude.chat(chat())

    assert answer["usage"]["prompt_tokens"] == 105


async def test_tools_are_declared_and_a_tool_call_comes_back_in_openai_shape(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    call = ToolUse("toolu_01", "get_weather", {"city": "Paris"})
    anthropic_api.will(Reply(text="Let me check.", tool_uses=[call], stop_reason="tool_use"))

    answer = await claude.chat(chat(tools=[WEATHER_TOOL]))

    assert anthropic_api.last["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert "tool_choice" not in anthropic_api.last
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
async def test_tool_choice(
    claude: AnthropicBackend,
    anthropic_api: FakeAnthropic,
    tool_choice: object,
    expected: dict[str, object],
) -> None:
    await claude.chat(chat(tools=[WEATHER_TOOL], tool_choice=tool_choice))

    assert anthropic_api.last["tool_choice"] == expected


async def test_parallel_tool_calls_false_disables_parallel_tool_use(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    await claude.chat(chat(tools=[WEATHER_TOOL], parallel_tool_calls=False))

    assert anthropic_api.last["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


async def test_a_tool_call_round_trip(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Reply(text="Paris: 18°C, Oslo: 9°C."))
    calls = [
        {
            "id": "toolu_01",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {
            "id": "toolu_02",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
    ]

    answer = await claude.chat(
        chat(
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "18°C"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": "9°C"},
            tools=[WEATHER_TOOL],
        )
    )

    assert anthropic_api.last["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18°C"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "9°C"},
            ],
        },
    ]
    assert answer["choices"][0]["message"]["content"] == "Paris: 18°C, Oslo: 9°C."


async def test_streamed_text(claude: AnthropicBackend, anthropic_api: FakeAnthropic) -> None:
    anthropic_api.will(Reply(text="Hello there, Ada!", input_tokens=8, output_tokens=5))

    events = [event async for event in claude.chat_stream(chat(stream=True))]

    assert anthropic_api.last["stream"] is True
    got = [orjson.loads(event.data) for event in events]
    assert {c["object"] for c in got} == {"chat.completion.chunk"}
    assert len({c["id"] for c in got}) == 1
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = [c["choices"][0]["delta"]["content"] for c in got[1:-2]]
    assert text == ["Hello ", "there, ", "Ada!"]
    assert got[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert got[-1]["choices"] == []
    assert got[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}
    assert events[-1].usage_only
    assert events[-1].usage is not None
    assert events[-1].usage.total_tokens == 13
    assert not any(event.usage_only for event in events[:-1])


async def test_streamed_tool_calls(claude: AnthropicBackend, anthropic_api: FakeAnthropic) -> None:
    anthropic_api.will(
        Reply(
            text="Checking.",
            tool_uses=[
                ToolUse("toolu_01", "get_weather", {"city": "Paris"}),
                ToolUse("toolu_02", "get_weather", {"city": "Oslo"}),
            ],
            stop_reason="tool_use",
        )
    )

    got = await chunks(claude.chat_stream(chat(stream=True, tools=[WEATHER_TOOL])))

    deltas = [c["choices"][0]["delta"] for c in got if c["choices"]]
    tool_deltas = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert tool_deltas[0] == {
        "index": 0,
        "id": "toolu_01",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(set(d) == {"index", "function"} for d in tool_deltas[1:3])
    for index, city in enumerate(["Paris", "Oslo"]):
        fragments = [d["function"]["arguments"] for d in tool_deltas if d["index"] == index]
        assert len(fragments) == 3
        assert orjson.loads("".join(fragments)) == {"city": city}
    assert got[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
async def test_finish_reasons(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic, stop_reason: str, finish_reason: str
) -> None:
    anthropic_api.will(Reply(text="x", stop_reason=stop_reason))
    anthropic_api.will(Reply(text="x", stop_reason=stop_reason))

    answer = await claude.chat(chat())
    streamed = await chunks(claude.chat_stream(chat(stream=True)))

    assert answer["choices"][0]["finish_reason"] == finish_reason
    assert streamed[-2]["choices"][0]["finish_reason"] == finish_reason


async def test_a_400_passes_on_with_the_providers_message(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Failure(400, "invalid_request_error", "prompt is too long: 300000 tokens"))

    with pytest.raises(UpstreamStatusError) as caught:
        await claude.chat(chat())

    assert caught.value.upstream_status == 400
    assert caught.value.to_openai() == {
        "error": {
            "message": "prompt is too long: 300000 tokens",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request_error",
        }
    }


async def test_a_request_the_api_refuses_is_a_400_before_any_chunk(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    # A blank stop sequence is Anthropic's 400, and its own message reaches the caller.
    with pytest.raises(UpstreamStatusError) as caught:
        await anext(aiter(claude.chat_stream(chat(stream=True, stop=[" "]))))

    assert caught.value.upstream_status == 400
    assert "stop_sequences" in caught.value.message


async def test_a_429_keeps_retry_after(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(
        Failure(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your rate limit.",
            {"retry-after": "17"},
        )
    )

    with pytest.raises(UpstreamStatusError) as caught:
        await claude.chat(chat())

    error = caught.value
    assert error.upstream_status == 429
    assert error.headers == {"retry-after": "17"}
    assert error.to_openai()["error"]["type"] == "rate_limit_error"


async def test_a_429_on_a_stream_is_raised_before_the_first_chunk(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Failure(429, "rate_limit_error", "slow down", {"retry-after": "3"}))

    with pytest.raises(UpstreamStatusError) as caught:
        await anext(aiter(claude.chat_stream(chat(stream=True))))

    assert caught.value.headers == {"retry-after": "3"}


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, "authentication_error"),
        (403, "permission_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_auth_failures_and_server_errors_are_502(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic, status: int, error_type: str
) -> None:
    anthropic_api.will(Failure(status, error_type, "something went wrong"))

    with pytest.raises(UpstreamError) as caught:
        await claude.chat(chat())

    assert caught.value.status == 502
    assert str(status) in caught.value.message


async def test_a_wrong_key_is_a_502_that_never_shows_the_key(
    anthropic_server: tuple[FakeAnthropic, str],
) -> None:
    wrong_key = "sk-ant-wrong-" + "w" * 24
    backend = AnthropicBackend("claude", anthropic_spec(anthropic_server[1], api_key=wrong_key))
    try:
        with pytest.raises(UpstreamError) as caught:
            await backend.chat(chat())
    finally:
        await backend.close()

    assert caught.value.status == 502
    shown = orjson.dumps(caught.value.to_openai()).decode() + str(caught.value)
    assert wrong_key not in shown
    assert ANTHROPIC_KEY not in shown


async def test_an_error_event_mid_stream_ends_it_with_a_502(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(MidStreamError("overloaded_error", "Overloaded"))
    events = claude.chat_stream(chat(stream=True))

    first = orjson.loads((await anext(events)).data)
    with pytest.raises(UpstreamError) as caught:
        await anext(events)

    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert caught.value.status == 502
    assert "overloaded_error" in caught.value.message


async def test_a_timeout_is_a_504(claude: AnthropicBackend, anthropic_api: FakeAnthropic) -> None:
    anthropic_api.will(Stall(2.0))

    with pytest.raises(UpstreamTimeoutError) as caught:
        await claude.chat(chat())

    assert caught.value.status == 504


async def test_an_unreachable_api_is_a_502() -> None:
    with LoopbackServer(FakeAnthropic(ANTHROPIC_KEY).app) as server:
        closed_url = server.url  # nothing listens there once the block ends
    backend = AnthropicBackend("claude", anthropic_spec(closed_url))
    try:
        with pytest.raises(UpstreamError) as caught:
            await backend.chat(chat())
    finally:
        await backend.close()

    assert caught.value.status == 502
    assert not isinstance(caught.value, UpstreamTimeoutError)


async def test_n_above_one_is_refused_without_a_call(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    with pytest.raises(UnsupportedError) as caught:
        await claude.chat(chat(n=2))

    assert (caught.value.status, caught.value.param) == (400, "n")
    assert anthropic_api.requests == []


async def test_json_schema_becomes_structured_output(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Reply(text='{"city": "Paris"}'))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

    answer = await claude.chat(
        chat(
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
        )
    )

    assert anthropic_api.last["output_config"] == {
        "format": {
            "type": "json_schema",
            "schema": {**schema, "additionalProperties": False},
        }
    }
    assert orjson.loads(answer["choices"][0]["message"]["content"]) == {"city": "Paris"}


async def test_health_and_close(anthropic_server: tuple[FakeAnthropic, str]) -> None:
    backend = default_factories()["anthropic"]("claude", anthropic_spec(anthropic_server[1]))

    assert isinstance(backend, AnthropicBackend)
    assert (await backend.health()).ready
    await backend.close()
    assert not (await backend.health()).ready


async def test_the_current_spans_traceparent_goes_to_the_api(
    claude: AnthropicBackend, anthropic_api: FakeAnthropic
) -> None:
    tracing = Tracing(TracingSettings(enabled=True), exporter=InMemorySpanExporter())
    anthropic_api.will(Reply(text="one"), Reply(text="two"), Reply(text="three"))
    try:
        with tracing.span("call") as span:
            await claude.chat(chat())
            [_ async for _ in claude.chat_stream(chat(stream=True))]
            ids = span.get_span_context()
        await claude.chat(chat())  # outside any span: nothing to pass on
    finally:
        tracing.shutdown()
    expected = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
    sent = [r.headers.get("traceparent") for r in anthropic_api.requests]
    assert sent == [expected, expected, None]
