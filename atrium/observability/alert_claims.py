"""One notification per alert transition across replicas, claimed in Redis.

Every replica evaluates the rules (each hears every event: its own consumer group), so
with N replicas an alert fires N times. Before notifying, a replica claims the
transition in a Redis sorted set per alert (the rule and its labels when it fired):
the set holds the replicas firing it, each until a deadline that its evaluation loop
pushes forward while the alert keeps firing. The replica that finds the set empty when
it fires sends the firing notification; the one that leaves it empty when it resolves
sends the resolved one; the others record the notification as sent by another replica.
So the fleet is told once when the first replica fires and once when the last one
resolves, and an alert that fires again later (the set empty again) is a new transition.
A replica that died while firing drops out once its deadline passes.

Redis unreachable: the replica sends anyway (a duplicate beats a lost alert) and logs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("atrium.alerts")

# Redis' own clock (TIME) measures the deadlines, so replicas' clocks need not agree.
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
# KEYS[1] the alert's set; ARGV replica, ttl ms. 1: nobody else fires it, notify.
_FIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local others = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then others = others - 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if others == 0 then return 1 end
return 0
"""
)
# KEYS[1] the alert's set; ARGV replica, "1" when this replica sent the firing itself.
# 1: the last one firing it resolved, notify.
_RESOLVE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 and (removed == 1 or ARGV[2] == '1') then return 1 end
return 0
"""
)
# KEYS the sets of alerts still firing here; ARGV replica, ttl ms. Members only: a
# replica whose deadline passed does not come back to an alert resolved meanwhile.
_KEEP = (
    _NOW
    + """
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, ARGV[1]) then
    redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', key, ARGV[2])
  end
end
return 0
"""
)


def claim_key(prefix: str, rule: str, labels: Mapping[str, str]) -> str:
    """The Redis key of one alert: its rule and labels (sorted, hashed)."""
    digest = hashlib.sha256(json.dumps(dict(labels), sort_keys=True).encode()).hexdigest()
    return f"{prefix}{rule}:{digest[:16]}"


class FleetClaims:
    """Claims alert transitions in Redis for one replica (``replica``)."""

    def __init__(
        self, redis: aioredis.Redis, replica: str, *, prefix: str, ttl_seconds: float
    ) -> None:
        self.replica = replica
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._fire: Any = redis.register_script(_FIRE)
        self._resolve: Any = redis.register_script(_RESOLVE)
        self._keep: Any = redis.register_script(_KEEP)

    def key(self, rule: str, labels: Mapping[str, str]) -> str:
        """The key of the alert of ``rule`` with ``labels``."""
        return claim_key(self._prefix, rule, labels)

    async def firing(self, key: str) -> bool:
        """Whether this replica notifies the alert firing (no other replica fires it)."""
        return await self._claim(key, self._fire, [self.replica, self._ttl_ms], "firing")

    async def resolved(self, key: str, *, sent_firing: bool) -> bool:
        """Whether this replica notifies the alert resolved (no other replica fires it)."""
        args = [self.replica, "1" if sent_firing else "0"]
        return await self._claim(key, self._resolve, args, "resolved")

    async def keep(self, keys: list[str]) -> None:
        """Push this replica's deadline forward on the alerts it still fires."""
        if not keys:
            return
        try:
            await self._keep(keys=keys, args=[self.replica, self._ttl_ms])
        except (RedisError, OSError) as exc:
            log.warning("could not refresh alert claims in Redis: %s", exc)

    async def _claim(self, key: str, script: Any, args: list[Any], state: str) -> bool:
        try:
            return bool(await script(keys=[key], args=args))
        except (RedisError, OSError) as exc:
            log.warning("could not claim the %s notification of %s in Redis (%s): sending it "
                        "anyway, another replica may send it too", state, key, exc)  # fmt: skip
            return True
