"""The Redis login throttle on a real Redis: shared by replicas, windowed, forgettable."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from atrium.core.errors import RateLimitError
from atrium.users.throttle import RedisLoginThrottle, throttle_subject

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest_asyncio.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    name = f"atrium-test:login:{secrets.token_hex(4)}:"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        async for key in client.scan_iter(match=name + "*"):
            await client.delete(key)
    finally:
        await client.aclose()


async def test_replicas_share_the_count_and_success_forgets(prefix: str) -> None:
    clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(2)]
    try:
        first, second = (
            RedisLoginThrottle(c, max_failures=2, window_seconds=60, prefix=prefix) for c in clients
        )
        subject = throttle_subject("alice", "10.0.0.1")
        await first.failed(subject)
        await second.check(subject)
        await second.failed(subject)
        for replica in (first, second):
            with pytest.raises(RateLimitError) as locked:
                await replica.check(subject)
            assert 0 < int(locked.value.headers["retry-after"]) <= 60
        await second.check(throttle_subject("alice", "10.0.0.2"))
        await first.succeeded(subject)
        await second.check(subject)
    finally:
        for client in clients:
            await client.aclose()


async def test_the_window_starts_at_the_first_failure(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        throttle = RedisLoginThrottle(client, max_failures=5, window_seconds=30, prefix=prefix)
        subject = throttle_subject("bob", "10.0.0.9")
        await throttle.failed(subject)
        ttl_first = await client.pttl(prefix + subject)
        await throttle.failed(subject)
        # A later failure does not push the window's end further out.
        assert 0 < await client.pttl(prefix + subject) <= ttl_first <= 30_000
        assert int(await client.get(prefix + subject)) == 2
    finally:
        await client.aclose()
