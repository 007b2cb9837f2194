"""The Redis prompt index on real Redis: nearest match, bounds, TTLs, failing as a miss."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from atrium.gateway.semantic_cache import RedisPromptIndex, Vector

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


def _unit(*values: float) -> Vector:
    vector = np.asarray(values, dtype=np.float32)
    return np.asarray(vector / np.linalg.norm(vector), dtype=np.float32)


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test:semcache:{secrets.token_hex(6)}:"


async def test_vectors_are_shared_scored_and_bounded(redis: aioredis.Redis, prefix: str) -> None:
    now = [1000.0]
    writer = RedisPromptIndex(redis, prefix, max_entries=2, clock=lambda: now[0])
    reader = RedisPromptIndex(redis, prefix, max_entries=2, clock=lambda: now[0])
    await writer.add("b", _unit(1, 0, 0), "east", ttl=10)
    await writer.add("b", _unit(0, 1, 0), "north", ttl=30)
    found = await reader.nearest("b", _unit(0.9, 0.1, 0))
    assert found is not None
    assert found[0] == "east"
    assert abs(found[1] - float(_unit(1, 0, 0) @ _unit(0.9, 0.1, 0))) < 1e-6
    assert await reader.nearest("other", _unit(1, 0, 0)) is None

    await writer.add("b", _unit(0, 0, 1), "up", ttl=20)  # over the bound: "east" expires first
    assert await redis.hlen(prefix + "b") == 2
    assert sorted(k.decode() for k in await redis.hkeys(prefix + "b")) == ["north", "up"]
    assert 25 <= await redis.ttl(prefix + "b") <= 30  # the hash lives as long as its newest

    now[0] = 1025.0  # "up" has expired, "north" has not
    found = await reader.nearest("b", _unit(0, 0.1, 1))
    assert found is not None
    assert found[0] == "north"


async def test_a_value_that_is_not_a_vector_is_skipped(redis: aioredis.Redis, prefix: str) -> None:
    index = RedisPromptIndex(redis, prefix, max_entries=10)
    await redis.hset(prefix + "b", "junk", b"xyz")
    await redis.expire(prefix + "b", 60)
    await index.add("b", _unit(1, 0), "good", ttl=60)
    found = await index.nearest("b", _unit(1, 0))
    assert found is not None
    assert found[0] == "good"


async def test_redis_down_reads_as_a_miss() -> None:
    broken = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        index = RedisPromptIndex(broken, "x:", max_entries=10, cooldown_s=60)
        await index.add("b", _unit(1, 0), "k", ttl=60)
        assert await index.nearest("b", _unit(1, 0)) is None
        assert index.failures == 1  # the first failure cools it down: no second attempt
    finally:
        await broken.aclose()
