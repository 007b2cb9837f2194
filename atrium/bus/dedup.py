"""Exactly-once handling on an at-least-once bus: an idempotent wrapper keyed by event id.

Delivery is at least once: a consumer that dies after its handler's work but before
the acknowledgement, a publish retried after its reply was lost, or a consumer that
stalls past the claim timeout all hand an event to a handler twice. A handler whose
work cannot be repeated wraps itself in :class:`IdempotentHandler`:

- ``SET key processing NX PX lease``: only one consumer of the group works on an
  event at a time; another that gets it meanwhile raises :class:`EventInProgressError`,
  so the bus retries it later (by which time it is done, or the lease ran out because
  the first consumer died);
- after the handler returns, ``SET key done PX ttl``: later deliveries are skipped;
- when the handler raises, the lease is dropped so the retry can start at once.

The lease should be about the bus's ``claim_idle_ms``: shorter, and a slow live
handler could be doubled; much longer, and a dead one delays the retry.

:func:`once_per_event` is how a consumer asks for it: wrapped on Redis Streams, where a
dead consumer's events go to another process; as it is in process, where an event comes
again only after its handler raised, and nothing outlives the process.

The done marker is set after the handler returns, so a consumer that dies between the
two leaves the work to be done again: where the work is a database write, deduplicating
in the writing transaction is exact (the audit consumer does that, by event id).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, runtime_checkable

import redis.asyncio as aioredis

from atrium.bus.base import E, EventBus

logger = logging.getLogger("atrium.bus")

_DONE = b"done"


class EventInProgressError(Exception):
    """Another consumer of the group holds the event's lease; retry it later."""


class IdempotentHandler(Generic[E]):
    """Wraps ``handler`` so each event id is handled to completion once per ``scope``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        handler: Callable[[E], Awaitable[None]],
        *,
        scope: str,
        prefix: str = "atrium:seen:",
        lease_ms: int = 30_000,
        ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        self._redis = redis
        self._handler = handler
        self._prefix = f"{prefix}{scope}:"
        self._lease_ms = lease_ms
        self._ttl_ms = ttl_s * 1000

    async def __call__(self, event: E) -> None:
        """Handle ``event`` unless it was handled already (or is being handled elsewhere)."""
        key = self._prefix + event.id
        if not await self._redis.set(key, "processing", nx=True, px=self._lease_ms):
            if await self._done(key):
                logger.info("skipping %s event %s: handled already", event.type, event.id)
                return
            raise EventInProgressError(f"event {event.id} is being handled by another consumer")
        try:
            await self._handler(event)
        except BaseException:
            await self._redis.delete(key)
            raise
        await self._redis.set(key, "done", px=self._ttl_ms)

    async def _done(self, key: str) -> bool:
        value = await self._redis.get(key)
        return value in (_DONE, "done")


@runtime_checkable
class DeduplicatingBus(Protocol):
    """A bus that can make a handler idempotent (Redis Streams: ``IdempotentHandler`` on
    its own Redis)."""

    def idempotent(
        self, handler: Callable[[E], Awaitable[None]], *, scope: str
    ) -> IdempotentHandler[E]:
        """``handler`` handling each event id once per ``scope``."""


def once_per_event(
    bus: EventBus, handler: Callable[[E], Awaitable[None]], *, scope: str
) -> Callable[[E], Awaitable[None]]:
    """``handler`` made to handle each event id once per ``scope`` on a bus that can hand an
    event to a second process (a ``DeduplicatingBus``); the handler itself on the
    in-process bus."""
    if isinstance(bus, DeduplicatingBus):
        return bus.idempotent(handler, scope=scope)
    return handler
