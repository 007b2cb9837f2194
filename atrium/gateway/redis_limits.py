"""Rate limits shared by every gateway replica: buckets and counters in Redis, moved by Lua.

Each check-and-debit is one Lua script, so it is atomic across replicas: N
processes sharing one Redis admit exactly the configured number. Time is
Redis's own clock (``TIME``), so replicas with skewed clocks agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from atrium.core.errors import LimiterUnavailableError, RateLimitError
from atrium.gateway.limits import Reservation, Subject, limited, over_parallel, too_large

log = logging.getLogger("atrium.gateway.limits")

# For each subject i (1-based), KEYS[3i-2..3i] are its rpm bucket, tpm bucket and
# parallel counter, and ARGV[3+3i-2..3+3i] its rpm, tpm and parallel limits (0: none).
# ARGV[1] is the token estimate, ARGV[2] the bucket ttl, ARGV[3] the counter ttl.
# Every subject is checked before any is debited. Returns {1} when admitted, else
# {0, subject index, which, seconds to wait as a string (Lua numbers come back from
# Redis truncated to integers)}.
_RESERVE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local estimate, ttl, counter_ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local function level(key, cap)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(state[1]), tonumber(state[2])
  if tokens == nil then return cap end
  return math.min(cap, tokens + (now - ts) * cap / 60)
end
local subjects = #KEYS / 3
local requests, tokens = {}, {}
for i = 1, subjects do
  local rpm, tpm, par = tonumber(ARGV[3*i+1]), tonumber(ARGV[3*i+2]), tonumber(ARGV[3*i+3])
  if par > 0 and tonumber(redis.call('GET', KEYS[3*i]) or '0') >= par then
    return {0, i, 'parallel', '1'}
  end
  if rpm > 0 then
    requests[i] = level(KEYS[3*i-2], rpm)
    if requests[i] < 1 then return {0, i, 'rpm', tostring((1 - requests[i]) * 60 / rpm)} end
  end
  if tpm > 0 then
    if estimate > tpm then return {0, i, 'too_large', '60'} end
    tokens[i] = level(KEYS[3*i-1], tpm)
    if tokens[i] < estimate then
      return {0, i, 'tpm', tostring((estimate - tokens[i]) * 60 / tpm)}
    end
  end
end
for i = 1, subjects do
  if requests[i] then
    redis.call('HSET', KEYS[3*i-2], 'tokens', tostring(requests[i] - 1), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[3*i-2], ttl)
  end
  if tokens[i] then
    redis.call('HSET', KEYS[3*i-1], 'tokens', tostring(tokens[i] - estimate), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[3*i-1], ttl)
  end
  if tonumber(ARGV[3*i+3]) > 0 then
    redis.call('INCR', KEYS[3*i])
    redis.call('EXPIRE', KEYS[3*i], counter_ttl)
  end
end
return {1}
"""

# Same KEYS layout; ARGV[1] tokens to give back (negative: to charge), ARGV[2] the bucket
# ttl, then per subject its tpm and parallel limits.
_RECONCILE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local delta, ttl = tonumber(ARGV[1]), ARGV[2]
for i = 1, #KEYS / 3 do
  local cap, par = tonumber(ARGV[2*i+1]), tonumber(ARGV[2*i+2])
  if cap > 0 and delta ~= 0 then
    local state = redis.call('HMGET', KEYS[3*i-1], 'tokens', 'ts')
    local tokens, ts = tonumber(state[1]), tonumber(state[2])
    if tokens == nil then tokens, ts = cap, now end
    tokens = math.min(cap, math.min(cap, tokens + (now - ts) * cap / 60) + delta)
    redis.call('HSET', KEYS[3*i-1], 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[3*i-1], ttl)
  end
  if par > 0 and tonumber(redis.call('GET', KEYS[3*i]) or '0') > 0 then
    redis.call('DECR', KEYS[3*i])
  end
end
return 1
"""

# A bucket untouched for two minutes is full again: Redis may forget it.
_TTL_SECONDS = 120
# A parallel counter left by a replica that died mid-request heals after this long idle.
_COUNTER_TTL_SECONDS = 600

FailureMode = Literal["open", "closed"]


class RedisRateLimiter:
    """Per-key RPM and TPM token buckets in Redis, exact across replicas.

    When Redis cannot be reached, ``on_failure`` decides: ``open`` admits the
    request (and logs and counts it), ``closed`` refuses it with 503.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "atrium:limits:",
        on_failure: FailureMode = "open",
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._on_failure = on_failure
        self._reserve = redis.register_script(_RESERVE)
        self._reconcile = redis.register_script(_RECONCILE)
        self.failures = 0

    def _keys(self, subjects: Sequence[Subject]) -> list[str]:
        # The braces keep a subject's keys in one Redis Cluster slot.
        return [
            f"{self._prefix}{{{s.id}}}:{kind}" for s in subjects for kind in ("rpm", "tpm", "par")
        ]

    async def reserve(self, subjects: Sequence[Subject], estimate: int) -> Reservation:
        """Check and take from every subject in one atomic script, or raise 429."""
        limited_subjects = tuple(s for s in subjects if s.limits.any)
        if not limited_subjects:
            return Reservation((), estimate)
        args: list[int] = [estimate, _TTL_SECONDS, _COUNTER_TTL_SECONDS]
        for subject in limited_subjects:
            limits = subject.limits
            args += [limits.rpm or 0, limits.tpm or 0, limits.parallel or 0]
        try:
            answer = await self._reserve(keys=self._keys(limited_subjects), args=args)
        except RedisError as exc:
            self._failed("reserve", exc)
            if self._on_failure == "closed":
                msg = "rate limits cannot be checked right now; retry shortly"
                raise LimiterUnavailableError(msg, headers={"retry-after": "1"}) from exc
            return Reservation((), estimate)  # admitted open: nothing to give back
        if int(answer[0]) == 1:
            return Reservation(limited_subjects, estimate)
        raise _refusal(limited_subjects[int(answer[1]) - 1], _text(answer[2]), answer[3], estimate)

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Give back (or charge) the token difference and free the parallel slots."""
        if not reservation.holds_anything:
            return
        args: list[int] = [reservation.tokens - actual_tokens, _TTL_SECONDS]
        for subject in reservation.subjects:
            args += [subject.limits.tpm or 0, subject.limits.parallel or 0]
        try:
            await self._reconcile(keys=self._keys(reservation.subjects), args=args)
        except RedisError as exc:
            self._failed("reconcile", exc)

    def reconcile_nowait(self, reservation: Reservation, actual_tokens: int) -> bool:
        """Never at once: reconciling is a round trip to Redis (await ``reconcile``)."""
        return False

    def _failed(self, what: str, exc: RedisError) -> None:
        self.failures += 1
        log.warning(
            "rate limiter: Redis failed on %s (%s); failing %s",
            what,
            type(exc).__name__,
            self._on_failure,
        )


def _refusal(subject: Subject, which: str, wait: bytes | str, estimate: int) -> RateLimitError:
    limits = subject.limits
    if which == "parallel":
        return over_parallel(subject)
    if which == "too_large":
        return too_large(subject, estimate, limits.tpm or 0)
    if which == "rpm":
        return limited(subject, "requests per minute", limits.rpm or 0, float(_text(wait)))
    return limited(subject, "tokens per minute", limits.tpm or 0, float(_text(wait)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
