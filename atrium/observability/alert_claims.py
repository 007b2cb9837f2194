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

A firing the fleet was told of stays recorded (a hash of told alerts, with what the
resolve must say) until its resolve is sent. A replica that died while firing drops
out of the set once its deadline passes; when it was the last one, the alert is
abandoned: the first live replica that does not fire it itself sends the resolve
(:meth:`FleetClaims.abandoned`, every evaluation), and one that fires it again takes
it over without a second firing notification.

Redis unreachable: the replica sends anyway (a duplicate beats a lost alert) and logs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("atrium.alerts")

# Redis' own clock (TIME) measures the deadlines, so replicas' clocks need not agree.
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
# KEYS[1] the alert's set, KEYS[2] the told hash; ARGV replica, ttl ms, what the resolve
# says, "1" when this replica sent the alert's last resolve without a claim (the record
# may have outlived it). 1: nobody fires it and the fleet was not told: notify. An alert
# told and abandoned (its replicas gone) is taken over: this replica will resolve it.
_FIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local others = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then others = others - 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if others > 0 then return 0 end
if ARGV[4] == '1' then redis.call('HSET', KEYS[2], KEYS[1], ARGV[3]) return 1 end
return redis.call('HSETNX', KEYS[2], KEYS[1], ARGV[3])
"""
)
# KEYS[1] the alert's set, KEYS[2] the told hash; ARGV replica, "1" when this replica
# sent the firing itself. 1: the last one firing it resolved and the fleet was told it
# fires (recorded, or by this replica: also when Redis lost the record), notify.
_RESOLVE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
local told = redis.call('HDEL', KEYS[2], KEYS[1])
if told == 1 or removed == 1 or ARGV[2] == '1' then return 1 end
return 0
"""
)
# KEYS[1] a told alert's set, KEYS[2] the told hash. 1: every replica firing it is gone
# (deadlines passed) and nobody resolved it: this replica sends the resolve.
_ABANDONED = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
return redis.call('HDEL', KEYS[2], KEYS[1])
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


@dataclass(frozen=True, slots=True)
class ToldAlert:
    """A firing the fleet was told of, as kept in Redis until its resolve is sent: what
    a replica that never saw it fire needs to send that resolve."""

    rule: str
    severity: str
    summary: str
    labels: dict[str, str]
    fired_at: datetime
    replica: str  # the replica that sent the firing

    def dumps(self) -> str:
        """The JSON kept in Redis."""
        return json.dumps(asdict(self) | {"fired_at": self.fired_at.isoformat()})

    @classmethod
    def loads(cls, text: str | bytes) -> ToldAlert:
        """Read what :meth:`dumps` wrote (ValueError, KeyError or TypeError if it is not)."""
        data = json.loads(text)
        return cls(str(data["rule"]), str(data["severity"]), str(data["summary"]),
                   {str(k): str(v) for k, v in data["labels"].items()},
                   datetime.fromisoformat(data["fired_at"]), str(data["replica"]))  # fmt: skip


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class FleetClaims:
    """Claims alert transitions in Redis for one replica (``replica``)."""

    def __init__(
        self, redis: aioredis.Redis, replica: str, *, prefix: str, ttl_seconds: float
    ) -> None:
        self.replica = replica
        self._redis = redis
        self._prefix = prefix
        self._told = f"{prefix}told"  # claim keys hold a ':' after the rule: never this
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._fire: Any = redis.register_script(_FIRE)
        self._resolve: Any = redis.register_script(_RESOLVE)
        self._abandoned: Any = redis.register_script(_ABANDONED)
        self._keep: Any = redis.register_script(_KEEP)
        # Alerts whose resolve this replica sent without a claim (Redis unreachable).
        self._resolved_unclaimed: set[str] = set()

    def key(self, rule: str, labels: Mapping[str, str]) -> str:
        """The key of the alert of ``rule`` with ``labels``."""
        return claim_key(self._prefix, rule, labels)

    async def firing(self, key: str, told: ToldAlert) -> bool:
        """Whether this replica notifies the alert firing (no other replica fires it and
        the fleet was not told); ``told`` is kept for its resolve when it does."""
        unclaimed = "1" if key in self._resolved_unclaimed else "0"
        args = [self.replica, self._ttl_ms, told.dumps(), unclaimed]
        self._resolved_unclaimed.discard(key)
        return await self._claim(key, self._fire, args, "firing")

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

    async def abandoned(self, skip: Collection[str] = ()) -> list[ToldAlert]:
        """The alerts the fleet was told fire whose every firing replica is gone (their
        deadlines passed): this replica won each one's resolve and must send it.

        ``skip``: the keys of the alerts this replica fires or may fire now (pending); it
        claims those itself, so a firing it is about to join is not resolved under it.
        """
        won: list[ToldAlert] = []
        try:
            told = await self._redis.hgetall(self._told)
            for raw_key, raw in told.items():
                key = _text(raw_key)
                if key in skip:
                    continue
                try:
                    alert = ToldAlert.loads(raw)
                except (ValueError, KeyError, TypeError, AttributeError):
                    log.warning("unreadable told alert %s in Redis: left alone", key)
                    continue
                if await self._abandoned(keys=[key, self._told]):
                    won.append(alert)
        except (RedisError, OSError) as exc:
            log.warning("could not look for abandoned alerts in Redis: %s", exc)
        return won

    async def _claim(self, key: str, script: Any, args: list[Any], state: str) -> bool:
        try:
            return bool(await script(keys=[key, self._told], args=args))
        except (RedisError, OSError) as exc:
            log.warning("could not claim the %s notification of %s in Redis (%s): sending it "
                        "anyway, another replica may send it too", state, key, exc)  # fmt: skip
            if state == "resolved":
                self._resolved_unclaimed.add(key)
            return True
