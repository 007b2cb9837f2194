"""Fixtures for the Redis Streams bus tests: a client per reply shape and a private prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
import redis.asyncio as aioredis

CLIENTS = {
    "resp2": {"protocol": 2},
    "resp3": {"protocol": 3},
    "resp3-decoded": {"protocol": 3, "decode_responses": True},
}


# Every test runs with each reply shape the bus may be handed: RESP2 and RESP3
# nest stream replies differently, and decode_responses turns bytes into str.
@pytest.fixture(params=list(CLIENTS.values()), ids=list(CLIENTS))
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=6379, **request.param)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: aioredis.Redis) -> AsyncIterator[str]:
    """A stream prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"atrium-test:{uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)
