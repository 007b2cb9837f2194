"""Rate limits: per-key RPM and TPM token buckets."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from atrium.core.errors import RateLimitError


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's limits; ``None`` means unlimited."""

    rpm: int | None
    tpm: int | None


@dataclass(slots=True)
class Reservation:
    """What a request holds against its key's TPM bucket until it is reconciled."""

    key_id: str
    tokens: int
    tpm: int | None


class RateLimiter(Protocol):
    """Admits or refuses requests against per-key limits."""

    async def reserve(self, key_id: str, limits: Limits, estimate: int) -> Reservation:
        """Take one request and ``estimate`` tokens, or raise 429 with ``Retry-After``."""

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the estimate with the real token count."""


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
    """Token buckets in this process's memory (the embedded default).

    Both buckets are checked before either is debited, so a refused request
    consumes nothing. Buckets exist only for authenticated keys, so memory is
    bounded by the number of keys.
    """

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str], TokenBucket] = field(default_factory=dict)

    def _bucket(self, key_id: str, kind: str, capacity: int, now: float) -> TokenBucket:
        bucket = self._buckets.get((key_id, kind))
        if bucket is None or bucket.capacity != capacity:
            bucket = TokenBucket(capacity=capacity, tokens=capacity, updated=now)
            self._buckets[(key_id, kind)] = bucket
        bucket.refill(now)
        return bucket

    async def reserve(self, key_id: str, limits: Limits, estimate: int) -> Reservation:
        """Take one request and ``estimate`` tokens, or raise 429."""
        now = self.clock()
        requests = tokens = None
        if limits.rpm is not None:
            requests = self._bucket(key_id, "rpm", limits.rpm, now)
            if requests.tokens < 1:
                raise limited("requests per minute", limits.rpm, requests.wait_for(1))
        if limits.tpm is not None:
            tokens = self._bucket(key_id, "tpm", limits.tpm, now)
            if estimate > limits.tpm:
                raise too_large(estimate, limits.tpm)
            if tokens.tokens < estimate:
                raise limited("tokens per minute", limits.tpm, tokens.wait_for(estimate))
        if requests is not None:
            requests.tokens -= 1
        if tokens is not None:
            tokens.tokens -= estimate
        return Reservation(key_id, estimate if tokens is not None else 0, limits.tpm)

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Refund or charge the difference between the estimate and the real count."""
        if reservation.tpm is None:
            return
        bucket = self._buckets.get((reservation.key_id, "tpm"))
        if bucket is not None:
            # May go below zero: the next requests wait until the overdraft refills.
            bucket.tokens = min(bucket.capacity, bucket.tokens + reservation.tokens - actual_tokens)


def too_large(estimate: int, tpm: int) -> RateLimitError:
    """A request that no amount of waiting lets through."""
    msg = (
        f"this request needs about {estimate} tokens, more than the key's limit "
        f"of {tpm} tokens per minute; lower max_tokens or the prompt"
    )
    return RateLimitError(msg, headers={"retry-after": "60"})


def limited(what: str, limit: int, wait: float) -> RateLimitError:
    """429 for a limit that lets the request through after ``wait`` seconds."""
    retry_after = max(1, math.ceil(wait))
    msg = f"rate limit reached: {limit} {what}; retry in {retry_after}s"
    return RateLimitError(msg, headers={"retry-after": str(retry_after)})
