"""The Redis response cache on real Redis: round trips, TTLs, and failing as a miss."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from atrium.core.settings import CacheSettings
from atrium.gateway.cache import CachedAnswer, RedisResponseCache, StreamRecorder
from atrium.gateway.cache import build_response_cache as build
from atrium.runtime.schema import JSON, Usage

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"

BODY: JSON = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris is the capital of France."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21},
}


@pytest_asyncio.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"atrium-test-cache-{secrets.token_hex(4)}:"
    yield name
    cleanup = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in cleanup.scan_iter(match=f"{name}*")]
    if keys:
        await cleanup.delete(*keys)
    await cleanup.aclose()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(REDIS_URL)
    yield redis
    await redis.aclose()


async def test_a_body_round_trips_and_is_marked_replayed(
    client: aioredis.Redis, prefix: str
) -> None:
    cache = RedisResponseCache(client, prefix)
    answer = CachedAnswer.from_body(BODY)
    assert await cache.get("k") is None
    await cache.put("k", answer, 60)
    hit = await cache.get("k")
    assert hit is not None
    assert hit.replayed
    assert hit.as_json() == BODY
    await cache.close()
    assert await client.ping()  # the borrowed client stays open


async def test_a_recorded_stream_round_trips(client: aioredis.Redis, prefix: str) -> None:
    recorder = StreamRecorder()
    for payload in CachedAnswer.from_body(BODY).as_events():
        recorder.feed(payload)
    recorder.feed(orjson.dumps({"id": "chatcmpl-123", "choices": [], "usage": BODY["usage"]}))
    answer = recorder.answer()
    assert answer is not None
    cache = RedisResponseCache(client, prefix)
    await cache.put("stream", answer, 60)
    hit = await cache.get("stream")
    assert hit is not None
    assert hit.events == answer.events
    assert hit.usage == Usage(prompt_tokens=14, completion_tokens=7)
    assert hit.as_json()["choices"][0]["message"]["content"] == "Paris is the capital of France."


async def test_entries_are_stored_under_the_prefix_with_a_ttl(
    client: aioredis.Redis, prefix: str
) -> None:
    cache = build(CacheSettings(backend="redis", redis_prefix=prefix), client)
    assert cache is not None
    await cache.put("k", CachedAnswer.from_body(BODY), 90.5)
    ttl = await client.ttl(f"{prefix}k")
    assert 0 < ttl <= 91


async def test_answers_over_the_entry_limit_are_not_stored(
    client: aioredis.Redis, prefix: str
) -> None:
    cache = RedisResponseCache(client, prefix, max_entry_bytes=100)
    await cache.put("big", CachedAnswer.from_body(BODY), 60)
    assert await client.exists(f"{prefix}big") == 0


async def test_a_value_it_cannot_read_is_a_miss(client: aioredis.Redis, prefix: str) -> None:
    await client.set(f"{prefix}bad", b"\x00garbage", ex=60)
    cache = RedisResponseCache(client, prefix)
    assert await cache.get("bad") is None
    assert cache.failures == 0  # Redis itself is fine: the cache stays in use
    await cache.put("bad", CachedAnswer.from_body(BODY), 60)
    assert await cache.get("bad") is not None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_unreachable_redis_is_a_miss_then_skipped_for_the_cooldown() -> None:
    clock = Clock()
    down = aioredis.Redis(host="127.0.0.1", port=1)
    cache = RedisResponseCache(
        down, "atrium-test-cache-down:", timeout_s=0.2, cooldown_s=5, clock=clock
    )
    try:
        assert await cache.get("k") is None
        assert cache.failures == 1
        # Within the cooldown Redis is not asked at all: nothing fails, nothing waits.
        await asyncio.wait_for(cache.put("k", CachedAnswer.from_body(BODY), 60), 0.05)
        assert await asyncio.wait_for(cache.get("k"), 0.05) is None
        assert cache.failures == 1
        clock.now += 5
        await cache.put("k", CachedAnswer.from_body(BODY), 60)
        assert cache.failures == 2
    finally:
        await down.aclose()


async def test_a_redis_that_never_answers_is_a_miss_after_the_timeout() -> None:
    """A server that accepts connections and then says nothing (a hung Redis)."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = aioredis.Redis(host="127.0.0.1", port=port)
    cache = RedisResponseCache(hung, "atrium-test-cache-hung:", timeout_s=0.2, cooldown_s=0)
    try:
        assert await asyncio.wait_for(cache.get("k"), 5) is None
        await asyncio.wait_for(cache.put("k", CachedAnswer.from_body(BODY), 60), 5)
    finally:
        await hung.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert cache.failures == 2
