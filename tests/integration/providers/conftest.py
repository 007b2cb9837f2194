"""Fake Anthropic and Gemini APIs on loopback, and backends pointed at them.

Each fake is served once per module by uvicorn in a thread; every test starts
with an empty script and no recorded requests. The backends are the real ones,
with the official SDKs reaching the fakes through their base URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from atrium.core.settings import AnthropicModel, GeminiModel
from atrium.runtime.backends.anthropic import AnthropicBackend
from atrium.runtime.backends.gemini import GeminiBackend
from tests.integration.providers.fake_anthropic import FakeAnthropic
from tests.integration.providers.fake_gemini import FakeGemini
from tests.integration.providers.loopback import LoopbackServer

ANTHROPIC_KEY = "sk-ant-test-" + "k" * 24
GEMINI_KEY = "AIza-test-" + "g" * 24
# Short enough for the timeout tests; loopback answers take milliseconds.
TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[tuple[FakeAnthropic, str]]:
    """The fake Messages API and its base URL, for the module."""
    fake = FakeAnthropic(ANTHROPIC_KEY)
    with LoopbackServer(fake.app) as server:
        yield fake, server.url


@pytest.fixture
def anthropic_api(anthropic_server: tuple[FakeAnthropic, str]) -> FakeAnthropic:
    """The fake Messages API, reset for this test."""
    fake, _ = anthropic_server
    fake.reset()
    return fake


def anthropic_spec(base_url: str, **fields: object) -> AnthropicModel:
    """Settings of a Claude model served by ``base_url``."""
    values: dict[str, object] = {
        "model": "claude-sonnet-4-6",
        "api_key": ANTHROPIC_KEY,
        "base_url": base_url,
        "timeout_seconds": TIMEOUT_S,
        "default_max_tokens": 1024,
    }
    return AnthropicModel.model_validate(values | fields)


@pytest_asyncio.fixture
async def claude(
    anthropic_server: tuple[FakeAnthropic, str], anthropic_api: FakeAnthropic
) -> AsyncIterator[AnthropicBackend]:
    """A backend on the fake Messages API, closed after the test."""
    backend = AnthropicBackend("claude", anthropic_spec(anthropic_server[1]))
    yield backend
    await backend.close()


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[tuple[FakeGemini, str]]:
    """The fake Gemini API and its base URL, for the module."""
    fake = FakeGemini(GEMINI_KEY)
    with LoopbackServer(fake.app) as server:
        yield fake, server.url


@pytest.fixture
def gemini_api(gemini_server: tuple[FakeGemini, str]) -> FakeGemini:
    """The fake Gemini API, reset for this test."""
    fake, _ = gemini_server
    fake.reset()
    return fake


def gemini_spec(base_url: str, **fields: object) -> GeminiModel:
    """Settings of a Gemini model served by ``base_url``."""
    values: dict[str, object] = {
        "model": "gemini-2.5-flash",
        "api_key": GEMINI_KEY,
        "base_url": base_url,
        "timeout_seconds": TIMEOUT_S,
    }
    return GeminiModel.model_validate(values | fields)


@pytest_asyncio.fixture
async def gemini(
    gemini_server: tuple[FakeGemini, str], gemini_api: FakeGemini
) -> AsyncIterator[GeminiBackend]:
    """A backend on the fake Gemini API, closed after the test."""
    backend = GeminiBackend("gemini", gemini_spec(gemini_server[1]))
    yield backend
    await backend.close()
