"""The in-process login throttle: a lockout after N failures, per name and address."""

from __future__ import annotations

import pytest

from atrium.core.errors import RateLimitError
from atrium.users.throttle import InProcessLoginThrottle, throttle_subject


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_locks_out_after_max_failures_until_the_window_passes() -> None:
    clock = Clock()
    throttle = InProcessLoginThrottle(max_failures=3, window_seconds=60, clock=clock)
    subject = throttle_subject("Alice", "10.0.0.1")
    for _ in range(3):
        await throttle.check(subject)
        await throttle.failed(subject)
        clock.now += 1
    with pytest.raises(RateLimitError) as locked:
        await throttle.check(subject)
    assert locked.value.headers["retry-after"] == "57"
    assert locked.value.code == "too_many_attempts"
    clock.now += 57
    await throttle.check(subject)  # the first failure left the window


async def test_subjects_are_separate_and_success_forgets() -> None:
    throttle = InProcessLoginThrottle(max_failures=1, window_seconds=60, clock=Clock())
    await throttle.failed(throttle_subject("alice", "10.0.0.1"))
    with pytest.raises(RateLimitError):
        await throttle.check(throttle_subject("ALICE ", "10.0.0.1"))
    await throttle.check(throttle_subject("alice", "10.0.0.2"))
    await throttle.check(throttle_subject("bob", "10.0.0.1"))
    await throttle.succeeded(throttle_subject("alice", "10.0.0.1"))
    await throttle.check(throttle_subject("alice", "10.0.0.1"))
