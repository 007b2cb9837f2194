"""Rate limits shared by every gateway replica: token buckets in Redis, moved by Lua.

Each check-and-debit is one Lua script, so it is atomic across replicas: N
processes sharing one Redis admit exactly the configured number. Time is
Redis's own clock (``TIME``), so replicas with skewed clocks agree.
"""

from __future__ import annotations

import logging
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from atrium.core.errors import LimiterUnavailableError
from atrium.gateway.limits import Limits, Reservation, limited, too_large

log = logging.getLogger("atrium.gateway.limits")

# KEYS: rpm bucket, tpm bucket. ARGV: rpm capacity, tpm capacity (0: no limit), estimate,
# bucket ttl. Returns {1} when admitted, else {0, which, seconds to wait (a string:
# Lua numbers come back from Redis truncated to integers)}.
_RESERVE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local function level(key, cap)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(state[1]), tonumber(state[2])
  if tokens == nil then return cap end
  return math.min(cap, tokens + (now - ts) * cap / 60)
end
local rpm, tpm, estimate, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local requests, tokens
if rpm > 0 then
  requests = level(KEYS[1], rpm)
  if requests < 1 then return {0, 'rpm', tostring((1 - requests) * 60 / rpm)} end
end
if tpm > 0 then
  if estimate > tpm then return {0, 'too_large', '60'} end
  tokens = level(KEYS[2], tpm)
  if tokens < estimate then return {0, 'tpm', tostring((estimate - tokens) * 60 / tpm)} end
end
if rpm > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(requests - 1), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[1], ttl)
end
if tpm > 0 then
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - estimate), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {1}
"""

# KEYS: tpm bucket. ARGV: capacity, tokens to give back (negative: to charge), ttl.
_RECONCILE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local cap, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, ts = cap, now end
tokens = math.min(cap, math.min(cap, tokens + (now - ts) * cap / 60) + delta)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# A bucket untouched for two minutes is full again: Redis may forget it.
_TTL_SECONDS = 120

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

    def _keys(self, key_id: str) -> list[str]:
        # The braces keep both buckets of a key in one Redis Cluster slot.
        return [f"{self._prefix}{{{key_id}}}:rpm", f"{self._prefix}{{{key_id}}}:tpm"]

    async def reserve(self, key_id: str, limits: Limits, estimate: int) -> Reservation:
        """Take one request and ``estimate`` tokens atomically, or raise 429."""
        reserved = estimate if limits.tpm is not None else 0
        if limits.rpm is None and limits.tpm is None:
            return Reservation(key_id, 0, None)
        args = [limits.rpm or 0, limits.tpm or 0, reserved, _TTL_SECONDS]
        try:
            answer = await self._reserve(keys=self._keys(key_id), args=args)
        except RedisError as exc:
            self._failed("reserve", exc)
            if self._on_failure == "closed":
                msg = "rate limits cannot be checked right now; retry shortly"
                raise LimiterUnavailableError(msg, headers={"retry-after": "1"}) from exc
            return Reservation(key_id, 0, None)  # admitted open: nothing to reconcile
        if int(answer[0]) == 1:
            return Reservation(key_id, reserved, limits.tpm)
        which, wait = _text(answer[1]), float(_text(answer[2]))
        if which == "too_large":
            raise too_large(estimate, limits.tpm or 0)
        if which == "rpm":
            raise limited("requests per minute", limits.rpm or 0, wait)
        raise limited("tokens per minute", limits.tpm or 0, wait)

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Give back (or charge) the difference between the estimate and the real count."""
        if reservation.tpm is None or actual_tokens == reservation.tokens:
            return
        key = self._keys(reservation.key_id)[1]
        args = [reservation.tpm, reservation.tokens - actual_tokens, _TTL_SECONDS]
        try:
            await self._reconcile(keys=[key], args=args)
        except RedisError as exc:
            self._failed("reconcile", exc)

    def _failed(self, what: str, exc: RedisError) -> None:
        self.failures += 1
        log.warning(
            "rate limiter: Redis failed on %s (%s); failing %s",
            what,
            type(exc).__name__,
            self._on_failure,
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
