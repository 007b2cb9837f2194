"""Hot state: a small key-value cache with TTLs in front of the relational store.

The store (SQLite or PostgreSQL) stays the source of truth; hot state holds copies of
what is read often (a chat's messages, ...) for ``ttl`` seconds and is invalidated by
the writer after each write. :class:`RedisHotState` is shared by every replica, so a
write on one replica is seen by reads on all others at once; :class:`InProcessHotState`
is the embedded default for one process. With several processes and no Redis, each
keeps its own copies and another process's write is seen within the TTL at worst.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("atrium.store.hot")


class HotState(Protocol):
    """Bytes by key with a time to live; a miss is ``None``."""

    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_seconds``."""
        ...

    async def delete(self, *keys: str) -> None:
        """Forget ``keys`` (after a write to what they copy)."""
        ...


class InProcessHotState:
    """Hot state in this process's memory: an LRU of at most ``max_entries``."""

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        """The value, refreshing its place in the LRU; None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Keep the value, evicting the least recently used entries beyond the bound."""
        self._entries[key] = (value, self._clock() + ttl_seconds)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        """Forget the keys."""
        for key in keys:
            self._entries.pop(key, None)


class RedisHotState:
    """Hot state in Redis under ``prefix``, shared by every replica.

    A cache must never fail a request: a Redis error on a read is a miss, on a write
    or an invalidation it is logged and skipped (a copy that could not be dropped
    lives out its TTL, which is why TTLs stay short).
    """

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "atrium:hot:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent, expired or Redis cannot be reached."""
        try:
            value = await self._redis.get(self._prefix + key)
        except RedisError:
            return None
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """SET with PX; skipped when Redis cannot be reached."""
        try:
            await self._redis.set(self._prefix + key, value, px=max(1, int(ttl_seconds * 1000)))
        except RedisError:
            return

    async def delete(self, *keys: str) -> None:
        """DEL the keys; logged when Redis cannot be reached."""
        if not keys:
            return
        try:
            await self._redis.delete(*(self._prefix + key for key in keys))
        except RedisError as exc:
            log.warning("hot state: could not drop %s (%s)", keys, type(exc).__name__)
