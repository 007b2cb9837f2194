from __future__ import annotations

import pytest

from atrium.core.errors import RateLimitError
from atrium.gateway.limits import InProcessRateLimiter, Limits, Subject


def _s(name: str, limits: Limits) -> Subject:
    return Subject(name, f"key {name!r}", limits)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(clock: Clock) -> InProcessRateLimiter:
    return InProcessRateLimiter(clock=clock)


async def test_rpm_admits_exactly_the_limit_then_429_with_retry_after(
    limiter: InProcessRateLimiter, clock: Clock
) -> None:
    limits = Limits(rpm=3, tpm=None)
    for _ in range(3):
        await limiter.reserve([_s("k", limits)], 10)
    with pytest.raises(RateLimitError) as refused:
        await limiter.reserve([_s("k", limits)], 10)
    assert refused.value.status == 429
    assert refused.value.headers["retry-after"] == "20"  # one request refills in 60/3 s
    clock.now += 20
    await limiter.reserve([_s("k", limits)], 10)


async def test_keys_have_separate_buckets(limiter: InProcessRateLimiter) -> None:
    limits = Limits(rpm=1, tpm=None)
    await limiter.reserve([_s("a", limits)], 1)
    await limiter.reserve([_s("b", limits)], 1)
    with pytest.raises(RateLimitError):
        await limiter.reserve([_s("a", limits)], 1)


async def test_tpm_reserves_the_estimate_and_reconciles_actual(
    limiter: InProcessRateLimiter, clock: Clock
) -> None:
    limits = Limits(rpm=None, tpm=600)
    held = await limiter.reserve([_s("k", limits)], 500)
    with pytest.raises(RateLimitError) as refused:
        await limiter.reserve([_s("k", limits)], 200)
    assert refused.value.headers["retry-after"] == "10"  # 100 missing at 10 tokens/s
    await limiter.reconcile(held, 50)  # the request used far less than estimated
    await limiter.reserve([_s("k", limits)], 500)


async def test_actual_usage_above_the_estimate_is_charged(limiter: InProcessRateLimiter) -> None:
    limits = Limits(rpm=None, tpm=600)
    held = await limiter.reserve([_s("k", limits)], 100)
    await limiter.reconcile(held, 600)
    with pytest.raises(RateLimitError):
        await limiter.reserve([_s("k", limits)], 1)


async def test_a_refused_request_consumes_nothing(limiter: InProcessRateLimiter) -> None:
    limits = Limits(rpm=2, tpm=100)
    await limiter.reserve([_s("k", limits)], 90)
    with pytest.raises(RateLimitError):
        await limiter.reserve([_s("k", limits)], 50)  # refused on TPM: its RPM slot is not taken
    await limiter.reserve([_s("k", limits)], 10)


async def test_a_request_larger_than_the_tpm_limit_says_so(limiter: InProcessRateLimiter) -> None:
    with pytest.raises(
        RateLimitError, match="more than the limit of 100 tokens per minute of key 'k'"
    ):
        await limiter.reserve([_s("k", Limits(rpm=None, tpm=100))], 101)


async def test_unlimited_keys_are_never_refused(limiter: InProcessRateLimiter) -> None:
    for _ in range(1000):
        await limiter.reserve([_s("k", Limits(rpm=None, tpm=None))], 10_000)


async def test_buckets_refill_but_never_above_capacity(
    limiter: InProcessRateLimiter, clock: Clock
) -> None:
    limits = Limits(rpm=2, tpm=None)
    clock.now += 3600
    await limiter.reserve([_s("k", limits)], 0)
    await limiter.reserve([_s("k", limits)], 0)
    with pytest.raises(RateLimitError):
        await limiter.reserve([_s("k", limits)], 0)


async def test_every_subject_must_have_room_and_a_refusal_takes_from_none(
    limiter: InProcessRateLimiter,
) -> None:
    key = _s("key", Limits(rpm=10))
    team = Subject("team", "team 'quants'", Limits(rpm=2))
    await limiter.reserve([key, team], 0)
    await limiter.reserve([key, team], 0)
    with pytest.raises(RateLimitError, match="team 'quants'"):
        await limiter.reserve([key, team], 0)
    other = _s("other", Limits(rpm=10))
    with pytest.raises(RateLimitError):
        await limiter.reserve([other, team], 0)  # the team is shared by its keys
    for _ in range(8):
        await limiter.reserve([key], 0)  # the refusals took nothing from the key
    with pytest.raises(RateLimitError):
        await limiter.reserve([key], 0)


async def test_parallel_requests_are_capped_until_reconciled(limiter: InProcessRateLimiter) -> None:
    subject = _s("k", Limits(parallel=2))
    first = await limiter.reserve([subject], 0)
    await limiter.reserve([subject], 0)
    with pytest.raises(RateLimitError) as refused:
        await limiter.reserve([subject], 0)
    assert refused.value.code == "too_many_parallel_requests"
    assert refused.value.headers["retry-after"] == "1"
    await limiter.reconcile(first, 0)
    await limiter.reserve([subject], 0)


async def test_in_memory_reconciling_is_done_at_once(limiter: InProcessRateLimiter) -> None:
    # The gateway settles with reconcile_nowait on the request's path (no task per request).
    subject = _s("k", Limits(tpm=600, parallel=1))
    held = await limiter.reserve([subject], 500)
    with pytest.raises(RateLimitError):
        await limiter.reserve([subject], 0)
    assert limiter.reconcile_nowait(held, 100) is True
    await limiter.reserve([subject], 500)  # the slot is free and 400 tokens came back
