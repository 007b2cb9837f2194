"""Both provider backends behind the whole gateway, driven by the official openai client.

The client parses every answer and chunk with its own types and accumulates
streamed tool calls, so a translation that drifts from OpenAI's shapes fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio

from atrium.app import build_app, build_platform
from atrium.core.settings import Settings
from tests.integration.providers.conftest import ANTHROPIC_KEY, GEMINI_KEY
from tests.integration.providers.fake_anthropic import Failure, FakeAnthropic, Reply, ToolUse
from tests.integration.providers.fake_gemini import FakeGemini, FunctionCall
from tests.integration.providers.fake_gemini import Reply as GeminiReply

pytestmark = pytest.mark.integration

KEY = "atr-" + "p" * 40
WEATHER_TOOL: dict[str, object] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest_asyncio.fixture
async def client(
    tmp_path: Path,
    anthropic_server: tuple[FakeAnthropic, str],
    gemini_server: tuple[FakeGemini, str],
    anthropic_api: FakeAnthropic,
    gemini_api: FakeGemini,
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official client on an in-process gateway serving both providers."""
    models = {
        "claude": {
            "backend": "anthropic",
            "model": "claude-sonnet-4-6",
            "api_key": ANTHROPIC_KEY,
            "base_url": anthropic_server[1],
        },
        "gemini": {
            "backend": "gemini",
            "model": "gemini-2.5-flash",
            "api_key": GEMINI_KEY,
            "base_url": gemini_server[1],
        },
    }
    settings = Settings.model_validate(
        {"data_dir": tmp_path, "auth": {"bootstrap_key": KEY}, "models": models}
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    await platform.start()
    transport = httpx.ASGITransport(build_app(settings, platform))
    try:
        async with httpx.AsyncClient(transport=transport) as http:
            yield openai.AsyncOpenAI(
                api_key=KEY, base_url="http://atrium/v1", http_client=http, max_retries=0
            )
    finally:
        await platform.close()


async def test_claude_answers_the_openai_client(
    client: openai.AsyncOpenAI, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Reply(text="Bonjour!", input_tokens=5, output_tokens=2))

    answer = await client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Say hello in French."}]
    )

    assert answer.choices[0].message.content == "Bonjour!"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.total_tokens == 7


async def test_a_streamed_claude_tool_call_accumulates_in_the_openai_client(
    client: openai.AsyncOpenAI, anthropic_api: FakeAnthropic
) -> None:
    call = ToolUse("toolu_01", "get_weather", {"city": "Paris"})
    anthropic_api.will(Reply(tool_uses=[call], stop_reason="tool_use"))

    async with client.chat.completions.stream(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream_options={"include_usage": True},
    ) as stream:
        final = await stream.get_final_completion()

    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls or []
    assert tool_call.id == "toolu_01"
    assert tool_call.function.name == "get_weather"
    assert tool_call.function.arguments == '{"city":"Paris"}'
    assert final.usage is not None


async def test_a_streamed_gemini_answer_and_tool_call(
    client: openai.AsyncOpenAI, gemini_api: FakeGemini
) -> None:
    call = FunctionCall("get_weather", {"city": "Oslo"}, id="fc-1")
    gemini_api.will(GeminiReply(text="Let me look that up.", function_calls=[call]))

    async with client.chat.completions.stream(
        model="gemini",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        final = await stream.get_final_completion()

    message = final.choices[0].message
    assert message.content == "Let me look that up."
    (tool_call,) = message.tool_calls or []
    assert (tool_call.id, tool_call.function.arguments) == ("fc-1", '{"city":"Oslo"}')
    assert final.choices[0].finish_reason == "tool_calls"


async def test_a_provider_429_reaches_the_openai_client_with_retry_after(
    client: openai.AsyncOpenAI, anthropic_api: FakeAnthropic
) -> None:
    anthropic_api.will(Failure(429, "rate_limit_error", "Too many tokens.", {"retry-after": "9"}))

    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "hi"}]
        )

    assert caught.value.response.headers["retry-after"] == "9"
    assert "Too many tokens." in str(caught.value)
