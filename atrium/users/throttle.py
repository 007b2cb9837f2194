"""Failed-login throttling per (username, client address): in-process or on Redis."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final, Protocol

import redis.asyncio as aioredis

from atrium.core.errors import RateLimitError

_MAX_TRACKED: Final = 10_000


class LoginThrottle(Protocol):
    """Counts failed logins; refuses further tries once too many fell in the window."""

    async def check(self, subject: str) -> None:
        """429 (with ``Retry-After``) while ``subject`` is locked out."""

    async def failed(self, subject: str) -> None:
        """Record one failed login of ``subject``."""

    async def succeeded(self, subject: str) -> None:
        """Forget ``subject``'s failures."""


def throttle_subject(username: str, address: str) -> str:
    """The throttled subject: a name tried from an address (so nobody locks others out)."""
    return f"{username.strip().lower()}|{address}"


def _locked_out(retry_after: float) -> RateLimitError:
    seconds = max(1, math.ceil(retry_after))
    msg = f"Too many failed sign-in attempts. Try again in {seconds} seconds."
    return RateLimitError(msg, code="too_many_attempts", headers={"retry-after": str(seconds)})


class InProcessLoginThrottle:
    """Failures kept in this process (one replica): at most ``max_failures`` per window."""

    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    async def check(self, subject: str) -> None:
        """429 while ``subject`` has ``max_failures`` failures within the window."""
        times = self._recent(subject)
        if len(times) >= self._max:
            raise _locked_out(times[0] + self._window - self._clock())

    async def failed(self, subject: str) -> None:
        """Record a failure now."""
        self._recent(subject).append(self._clock())
        self._failures.move_to_end(subject)
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)

    async def succeeded(self, subject: str) -> None:
        """Forget the subject's failures."""
        self._failures.pop(subject, None)

    def _recent(self, subject: str) -> deque[float]:
        times = self._failures.setdefault(subject, deque())
        cutoff = self._clock() - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        return times


class RedisLoginThrottle:
    """Failures counted in Redis, shared by every replica (a fixed window per subject)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_failures: int,
        window_seconds: float,
        prefix: str = "atrium:login:",
    ) -> None:
        self._redis = client
        self._max = max_failures
        self._window_ms = max(1, int(window_seconds * 1000))
        self._prefix = prefix

    async def check(self, subject: str) -> None:
        """429 while the subject's counter is at the limit."""
        key = self._prefix + subject
        count = await self._redis.get(key)
        if count is not None and int(count) >= self._max:
            ttl_ms = await self._redis.pttl(key)
            raise _locked_out(max(ttl_ms, 1000) / 1000)

    async def failed(self, subject: str) -> None:
        """Count a failure; the window starts at the first one."""
        key = self._prefix + subject
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, self._window_ms, nx=True)
            await pipe.execute()

    async def succeeded(self, subject: str) -> None:
        """Forget the subject's failures."""
        await self._redis.delete(self._prefix + subject)
