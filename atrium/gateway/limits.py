"""Rate limits: RPM and TPM token buckets and a parallel-request cap, per subject.

A request is checked against several subjects at once (its key, its key's team,
the model); it is admitted only if every one of them has room, and a refused
request takes nothing from any of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from atrium.core.errors import RateLimitError


@dataclass(frozen=True, slots=True)
class Limits:
    """A subject's limits; ``None`` means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None

    @property
    def any(self) -> bool:
        """Whether anything is limited at all."""
        return self.rpm is not None or self.tpm is not None or self.parallel is not None


@dataclass(frozen=True, slots=True)
class Subject:
    """What a limit applies to: ``id`` is stable (``key:<id>``), ``label`` is for people."""

    id: str
    label: str
    limits: Limits


@dataclass(slots=True)
class Reservation:
    """What a request holds until it is reconciled: tokens and parallel slots."""

    subjects: tuple[Subject, ...]
    tokens: int

    @property
    def holds_anything(self) -> bool:
        """Whether reconciling has anything to give back."""
        return any(s.limits.tpm is not None or s.limits.parallel is not None for s in self.subjects)


class RateLimiter(Protocol):
    """Admits or refuses requests against their subjects' limits."""

    async def reserve(self, subjects: Sequence[Subject], estimate: int) -> Reservation:
        """Take a request, ``estimate`` tokens and a parallel slot from every subject, or 429."""

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the estimate with the real token count and free the parallel slots."""

    def reconcile_nowait(self, reservation: Reservation, actual_tokens: int) -> bool:
        """``reconcile`` at once when it needs no I/O; False: await ``reconcile`` instead."""


@dataclass(slots=True)
class TokenBucket:
    """A bucket of ``capacity`` that refills at ``capacity`` per minute."""

    capacity: float
    tokens: float
    updated: float

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        """Add what accrued since the last look."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available."""
        return max(0.0, (amount - self.tokens) / self.rate)


@dataclass
class InProcessRateLimiter:
    """Token buckets and counters in this process's memory (the embedded default).

    Buckets exist only for subjects that reached the limiter (authenticated keys,
    their teams, configured models), so memory is bounded by those.
    """

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str], TokenBucket] = field(default_factory=dict)
    _running: dict[str, int] = field(default_factory=dict)

    def _bucket(self, subject: str, kind: str, capacity: int, now: float) -> TokenBucket:
        bucket = self._buckets.get((subject, kind))
        if bucket is None or bucket.capacity != capacity:
            bucket = TokenBucket(capacity=capacity, tokens=capacity, updated=now)
            self._buckets[(subject, kind)] = bucket
        bucket.refill(now)
        return bucket

    async def reserve(self, subjects: Sequence[Subject], estimate: int) -> Reservation:
        """Check every subject, then take from all of them; or raise 429."""
        now = self.clock()
        for subject in subjects:
            self._check(subject, estimate, now)
        for subject in subjects:
            self._take(subject, estimate, now)
        return Reservation(tuple(s for s in subjects if s.limits.any), estimate)

    def _check(self, subject: Subject, estimate: int, now: float) -> None:
        limits = subject.limits
        if limits.parallel is not None and self._running.get(subject.id, 0) >= limits.parallel:
            raise over_parallel(subject)
        if limits.rpm is not None:
            requests = self._bucket(subject.id, "rpm", limits.rpm, now)
            if requests.tokens < 1:
                raise limited(subject, "requests per minute", limits.rpm, requests.wait_for(1))
        if limits.tpm is not None:
            if estimate > limits.tpm:
                raise too_large(subject, estimate, limits.tpm)
            tokens = self._bucket(subject.id, "tpm", limits.tpm, now)
            if tokens.tokens < estimate:
                raise limited(subject, "tokens per minute", limits.tpm, tokens.wait_for(estimate))

    def _take(self, subject: Subject, estimate: int, now: float) -> None:
        limits = subject.limits
        if limits.parallel is not None:
            self._running[subject.id] = self._running.get(subject.id, 0) + 1
        if limits.rpm is not None:
            self._bucket(subject.id, "rpm", limits.rpm, now).tokens -= 1
        if limits.tpm is not None:
            self._bucket(subject.id, "tpm", limits.tpm, now).tokens -= estimate

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Refund or charge the difference; free the parallel slots."""
        self.reconcile_nowait(reservation, actual_tokens)

    def reconcile_nowait(self, reservation: Reservation, actual_tokens: int) -> bool:
        """Settle in memory at once (no task to schedule on the request's path)."""
        for subject in reservation.subjects:
            if subject.limits.parallel is not None:
                self._running[subject.id] = max(0, self._running.get(subject.id, 0) - 1)
            bucket = self._buckets.get((subject.id, "tpm"))
            if subject.limits.tpm is not None and bucket is not None:
                # May go below zero: the next requests wait until the overdraft refills.
                bucket.tokens = min(
                    bucket.capacity, bucket.tokens + reservation.tokens - actual_tokens
                )
        return True


def too_large(subject: Subject, estimate: int, tpm: int) -> RateLimitError:
    """A request that no amount of waiting lets through."""
    msg = (
        f"this request needs about {estimate} tokens, more than the limit of {tpm} tokens "
        f"per minute of {subject.label}; lower max_tokens or the prompt"
    )
    return RateLimitError(msg, headers={"retry-after": "60"})


def limited(subject: Subject, what: str, limit: int, wait: float) -> RateLimitError:
    """429 for a limit that lets the request through after ``wait`` seconds."""
    retry_after = max(1, math.ceil(wait))
    msg = f"rate limit reached for {subject.label}: {limit} {what}; retry in {retry_after}s"
    return RateLimitError(msg, headers={"retry-after": str(retry_after)})


def over_parallel(subject: Subject) -> RateLimitError:
    """429 for too many requests at once."""
    limit = subject.limits.parallel
    msg = f"{subject.label} already has {limit} requests in flight, its limit; retry shortly"
    return RateLimitError(msg, code="too_many_parallel_requests", headers={"retry-after": "1"})
