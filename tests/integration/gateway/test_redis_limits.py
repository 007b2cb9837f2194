"""The Redis rate limiter on real Redis: exact across clients, atomic, failing as told."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from atrium.core.errors import LimiterUnavailableError, RateLimitError
from atrium.gateway.limits import Limits, Subject
from atrium.gateway.redis_limits import RedisRateLimiter

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest_asyncio.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"atrium-test-limits-{secrets.token_hex(4)}:"
    yield name
    cleanup = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in cleanup.scan_iter(match=f"{name}*")]
    if keys:
        await cleanup.delete(*keys)
    await cleanup.aclose()


@pytest_asyncio.fixture
async def limiters(prefix: str) -> AsyncIterator[list[RedisRateLimiter]]:
    """Two limiters on two separate connections, as two replicas would have."""
    clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(2)]
    yield [RedisRateLimiter(c, prefix=prefix) for c in clients]
    for client in clients:
        await client.aclose()


def _s(name: str, limits: Limits) -> Subject:
    return Subject(name, f"key {name!r}", limits)


async def _admitted(limiter: RedisRateLimiter, limits: Limits, estimate: int) -> bool:
    try:
        await limiter.reserve([_s("key", limits)], estimate)
    except RateLimitError:
        return False
    return True


async def test_concurrent_replicas_admit_exactly_the_rpm(
    limiters: list[RedisRateLimiter],
) -> None:
    limits = Limits(rpm=10, tpm=None)
    attempts = [_admitted(limiters[i % 2], limits, 0) for i in range(30)]
    results = await asyncio.gather(*attempts)
    assert sum(results) == 10


async def test_refusal_says_when_to_retry(limiters: list[RedisRateLimiter]) -> None:
    limits = Limits(rpm=2, tpm=None)
    await limiters[0].reserve([_s("key", limits)], 0)
    await limiters[1].reserve([_s("key", limits)], 0)
    with pytest.raises(RateLimitError) as refused:
        await limiters[0].reserve([_s("key", limits)], 0)
    assert refused.value.status == 429
    assert 29 <= int(refused.value.headers["retry-after"]) <= 30  # one request per 30 s


async def test_tpm_reserves_then_reconciles_across_replicas(
    limiters: list[RedisRateLimiter],
) -> None:
    limits = Limits(rpm=None, tpm=1000)
    held = await limiters[0].reserve([_s("key", limits)], 900)
    assert not await _admitted(limiters[1], limits, 200)
    await limiters[0].reconcile(held, 100)  # used far less than reserved
    assert await _admitted(limiters[1], limits, 700)


async def test_charges_beyond_the_estimate_and_refuses_what_never_fits(
    limiters: list[RedisRateLimiter],
) -> None:
    limits = Limits(rpm=None, tpm=1000)
    held = await limiters[0].reserve([_s("key", limits)], 10)
    await limiters[0].reconcile(held, 1000)
    assert not await _admitted(limiters[1], limits, 5)
    with pytest.raises(RateLimitError, match="more than the limit of 1000 tokens per minute"):
        await limiters[0].reserve([_s("key", limits)], 1001)


async def test_a_refused_request_takes_nothing(limiters: list[RedisRateLimiter]) -> None:
    limits = Limits(rpm=2, tpm=100)
    await limiters[0].reserve([_s("key", limits)], 90)
    assert not await _admitted(limiters[1], limits, 50)  # refused on TPM; RPM untouched
    assert await _admitted(limiters[1], limits, 10)


async def test_keys_and_unlimited_keys_are_independent(limiters: list[RedisRateLimiter]) -> None:
    await limiters[0].reserve([_s("a", Limits(rpm=1, tpm=None))], 0)
    await limiters[0].reserve([_s("b", Limits(rpm=1, tpm=None))], 0)
    for _ in range(50):
        await limiters[1].reserve([_s("c", Limits(rpm=None, tpm=None))], 10**6)


async def test_unreachable_redis_fails_open_or_closed_as_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    limits = Limits(rpm=1, tpm=100)
    try:
        open_limiter = RedisRateLimiter(dead, on_failure="open")
        for _ in range(3):
            reservation = await open_limiter.reserve([_s("key", limits)], 10)
            await open_limiter.reconcile(reservation, 50)
        assert open_limiter.failures == 3
        assert "failing open" in caplog.text
        closed = RedisRateLimiter(dead, on_failure="closed")
        with pytest.raises(LimiterUnavailableError) as refused:
            await closed.reserve([_s("key", limits)], 10)
        assert refused.value.status == 503
        assert refused.value.headers == {"retry-after": "1"}
    finally:
        await dead.aclose()


async def test_team_and_parallel_limits_hold_across_replicas(
    limiters: list[RedisRateLimiter],
) -> None:
    team = Subject("team", "team 'quants'", Limits(rpm=4, parallel=2))
    keys = [_s(f"k{i}", Limits(rpm=100)) for i in range(4)]
    held = [await limiters[i % 2].reserve([keys[i], team], 0) for i in range(2)]
    with pytest.raises(RateLimitError, match="already has 2 requests in flight"):
        await limiters[0].reserve([keys[2], team], 0)
    await limiters[1].reconcile(held[0], 0)
    third = await limiters[0].reserve([keys[2], team], 0)
    await limiters[1].reconcile(held[1], 0)
    fourth = await limiters[1].reserve([keys[3], team], 0)
    for done in (third, fourth):
        await limiters[0].reconcile(done, 0)
    with pytest.raises(RateLimitError, match="team 'quants': 4 requests per minute"):
        await limiters[0].reserve([keys[0], team], 0)
