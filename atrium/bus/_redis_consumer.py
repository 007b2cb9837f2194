"""One consumer of a Redis Streams consumer group: delivery, retries, reclaim, dead letters.

Each pass of the loop:

1. every ``claim_idle_ms / 2``, ``XAUTOCLAIM ... JUSTID`` moves entries that other
   consumers of the group left pending for ``claim_idle_ms`` (they died or hung) into
   this consumer's pending list, without counting a delivery;
2. this consumer's own pending entries (failed, claimed, or left by an earlier process
   of the same name) are retried once each has been idle for its backoff
   (``backoff_s * 2 ** (deliveries - 1)``, at most ``backoff_max_s``): ``XCLAIM``
   hands back the entry and counts the delivery;
3. ``XREADGROUP >`` waits for new entries, at most until the next retry is due.

An entry is dead-lettered (copied to the dead-letter stream with the reason, then
acknowledged, in one transaction) when its handler has failed on its
``max_deliveries``-th delivery, when it reaches that many deliveries without being
acknowledged, or at once when it cannot be decoded (unknown type or version, bad JSON).

While a batch is being handled, a heartbeat re-claims its entries every
``claim_idle_ms / 3`` (``XCLAIM ... JUSTID`` resets the idle time without counting
a delivery), so a slow but live consumer keeps them and only a dead one loses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from atrium.bus.admin import failed_now
from atrium.bus.base import E, Event, raise_if_cancel_requested

logger = logging.getLogger("atrium.bus")

ONLY_FIELD = "only"
"""An entry field naming the one group that should handle it (a retried dead letter)."""

_MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """Where a consumer reads from and how."""

    stream: str
    topic: str
    group: str
    consumer: str
    block_ms: int
    batch: int
    retry_delay_s: float  # after a Redis error, before reading again
    max_deliveries: int
    claim_idle_ms: int
    backoff_s: float
    backoff_max_s: float
    dead_letter_stream: str
    dead_letter_maxlen: int
    presence_key: str  # sorted set: consumer -> time of its last heartbeat (3 a claim_idle)
    # A group of one replica alone (``replica_group``): destroyed when its consumer stops.
    ephemeral: bool = False
    concurrency: int = 1  # new entries of a batch handled at once (``EventBus.subscribe``)

    def backoff_ms(self, deliveries: int) -> int:
        """How long an entry delivered ``deliveries`` times waits before the next try."""
        seconds = min(self.backoff_max_s, self.backoff_s * 2 ** max(0, deliveries - 1))
        return int(seconds * 1000)


class PoisonError(Exception):
    """A stream entry that can never be turned into an event."""


class Decoder(Generic[E]):
    """Turns a stream entry's fields back into the subscribed event class."""

    def __init__(self, event_type: type[E], registry: Mapping[str, type[Event]]) -> None:
        self._event_type = event_type
        self._registry = registry

    def decode(self, fields: Mapping[Any, Any]) -> E:
        """The event in ``fields``; ``PoisonError`` with the reason when there is none."""
        type_name = field_text(fields, "type")
        cls = self._registry.get(type_name)
        if cls is None or not issubclass(cls, self._event_type):
            raise PoisonError(f"unknown event type {type_name!r}")
        _check_version(field_text(fields, "v"), cls)
        data = fields.get(b"data", fields.get("data"))
        if data is None:
            raise PoisonError("entry has no 'data' field")
        try:
            event = cls.model_validate_json(data)
        except ValidationError as exc:
            raise PoisonError(f"invalid {type_name} data: {exc}") from exc
        # issubclass above already guarantees this; isinstance lets the type checker see it.
        if not isinstance(event, self._event_type):
            raise PoisonError(f"decoded {type_name} is not a {self._event_type.__name__}")
        return event


def _check_version(raw: str, cls: type[Event]) -> None:
    # Older versions are read as the current class (fields it does not know are
    # ignored, new ones have defaults); a newer one was written by code this
    # process does not have, so guessing would lose or misread fields.
    try:
        version = int(raw)
    except ValueError:
        raise PoisonError(f"unknown {cls.type} version {raw!r}") from None
    if not 1 <= version <= cls.version:
        raise PoisonError(f"unknown {cls.type} version {version} (this code knows {cls.version})")


class StreamConsumer(Generic[E]):
    """One consumer of a group (see the module docstring for the loop)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        spec: ConsumerSpec,
        decoder: Decoder[E],
        handler: Callable[[E], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self._spec = spec
        self._decoder = decoder
        self._handler = handler
        self._failures: dict[str, str] = {}  # entry id -> why its handler last failed here
        self._held: dict[str, Any] = {}  # entries delivered here and not yet settled
        self._next_reclaim = 0.0

    async def join(self) -> None:
        """Announce this consumer, then create its group: announced first, a new group is
        never taken for an abandoned one by the sweep of ``sweep_replica_groups``."""
        await self._announce()
        await self.ensure_group()

    async def ensure_group(self, start: str = "$") -> None:
        """Create the consumer group (and the stream) at ``start`` unless it exists."""
        spec = self._spec
        try:
            await self._redis.xgroup_create(spec.stream, spec.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until cancelled, riding out Redis errors (it reconnects on its own)."""
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"{self._spec.consumer}.beat")
        with contextlib.suppress(RedisError):
            await self._announce()
        try:
            while True:
                try:
                    await self._consume()
                except RedisError:
                    # Redis restarted or the network blipped. Without persistence the
                    # group may be gone too, so it is recreated before reading again.
                    logger.warning(
                        "event consumer %s lost Redis; retrying", self._spec.consumer, exc_info=True
                    )
                    await asyncio.sleep(self._spec.retry_delay_s)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            with contextlib.suppress(RedisError):
                await asyncio.shield(self._leave())

    async def _leave(self) -> None:
        """Leave the group; a replica's own group goes with it (nobody else reads it)."""
        spec = self._spec
        if not spec.ephemeral:
            await self._redis.zrem(spec.presence_key, spec.consumer)
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xgroup_destroy(spec.stream, spec.group)
            pipe.delete(spec.presence_key)
            await pipe.execute()

    async def _consume(self) -> None:
        await self.ensure_group()
        while True:
            raise_if_cancel_requested()
            await self._reclaim_if_due()
            wait_ms = await self._retry_due()
            block = (
                self._spec.block_ms
                if wait_ms is None
                else max(1, min(wait_ms, self._spec.block_ms))
            )
            await self._read_new(block)

    async def _reclaim_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_reclaim:
            return
        self._next_reclaim = now + self._spec.claim_idle_ms / 2000
        spec = self._spec
        claimed = await self._redis.xautoclaim(
            spec.stream,
            spec.group,
            spec.consumer,
            spec.claim_idle_ms,
            count=spec.batch,
            justid=True,
        )
        ids = _autoclaimed_ids(claimed)
        if ids:
            logger.warning("consumer %s took over %d stalled entries", spec.consumer, len(ids))

    async def _retry_due(self) -> int | None:
        """Retry this consumer's pending entries whose backoff is over; ms to the next one."""
        spec = self._spec
        rows = await self._redis.xpending_range(
            spec.stream, spec.group, "-", "+", spec.batch, consumername=spec.consumer
        )
        next_due: int | None = None
        for row in rows:
            deliveries = int(row["times_delivered"])
            wait = spec.backoff_ms(deliveries) - int(row["time_since_delivered"])
            if wait > 0:
                next_due = wait if next_due is None else min(next_due, wait)
                continue
            await self._redeliver(row["message_id"], deliveries)
        return next_due

    async def _redeliver(self, message_id: Any, deliveries: int) -> None:
        spec = self._spec
        if deliveries >= spec.max_deliveries:
            entries = await self._redis.xrange(spec.stream, message_id, message_id)
            fields = entries[0][1] if entries else {}
            reason = self._failures.pop(as_text(message_id), None) or (
                f"not acknowledged after {deliveries} deliveries "
                "(a consumer died or stalled while handling it)"
            )
            await self._dead_letter(message_id, fields or {}, reason, deliveries)
            return
        claimed: Any = await self._redis.xclaim(
            spec.stream, spec.group, spec.consumer, spec.backoff_ms(deliveries), [message_id]
        )
        for claimed_id, fields in claimed:
            await self._handle(claimed_id, fields, deliveries + 1)

    async def _read_new(self, block: int) -> None:
        raise_if_cancel_requested()
        spec = self._spec
        response = await self._redis.xreadgroup(
            spec.group, spec.consumer, {spec.stream: ">"}, count=spec.batch, block=block
        )
        entries = entries_of(response)
        # The whole batch is this consumer's until handled: the heartbeat keeps it so.
        self._held = {as_text(message_id): message_id for message_id, _ in entries}
        size = self._spec.concurrency
        for start in range(0, len(entries), size):
            await self._handle_at_once(entries[start : start + size])

    async def _handle_at_once(self, entries: list[tuple[Any, Any]]) -> None:
        """Handle ``entries`` with their handlers running concurrently; what Redis is told
        afterwards (one ``XACK`` for those handled, retries and dead letters for the rest)
        is sent in order, so a batch takes a few connections from the pool, not one each."""
        if len(entries) == 1:
            await self._handle(*entries[0], 1)
            return
        ready = []
        for message_id, fields in entries:
            event = await self._prepare(message_id, fields, 1)
            if event is not None:
                ready.append((message_id, fields, event))
        errors = await asyncio.gather(
            *(self._run_handler(event, message_id) for message_id, _, event in ready)
        )
        handled = [m for (m, _, _), error in zip(ready, errors, strict=True) if error is None]
        if handled:
            for message_id in handled:
                self._failures.pop(as_text(message_id), None)
            await self._redis.xack(self._spec.stream, self._spec.group, *handled)
        for (message_id, fields, _), error in zip(ready, errors, strict=True):
            if error is not None:
                await self._settle(message_id, fields, 1, error)

    async def _handle(
        self, message_id: Any, fields: Mapping[Any, Any] | None, delivery: int
    ) -> None:
        event = await self._prepare(message_id, fields, delivery)
        if event is not None:
            error = await self._run_handler(event, message_id)
            await self._settle(message_id, fields or {}, delivery, error)

    async def _prepare(
        self, message_id: Any, fields: Mapping[Any, Any] | None, delivery: int
    ) -> E | None:
        """The entry's event, or None once an entry that is not one for this group's
        handler is acknowledged or dead-lettered."""
        if not fields:
            # A pending entry whose data the stream trimmed away: nothing left to deliver.
            logger.warning("acking trimmed entry %s of %s", as_text(message_id), self._spec.stream)
            await self._ack(message_id)
            return None
        only = field_text(fields, ONLY_FIELD)
        if only and only != self._spec.group:
            await self._ack(message_id)  # a retried dead letter meant for another group
            return None
        try:
            return self._decoder.decode(fields)
        except PoisonError as exc:
            await self._dead_letter(message_id, fields, str(exc), delivery)
            return None

    async def _run_handler(self, event: E, message_id: Any) -> str | None:
        """Call the handler (the heartbeat keeps the entry meanwhile); why it failed, if so."""
        self._held[as_text(message_id)] = message_id
        try:
            return await self._call_handler(event, message_id)
        finally:
            self._held.pop(as_text(message_id), None)

    async def _settle(
        self, message_id: Any, fields: Mapping[Any, Any], delivery: int, error: str | None
    ) -> None:
        """Acknowledge a handled entry; leave a failed one pending, or dead-letter it."""
        if error is None:
            self._failures.pop(as_text(message_id), None)
            await self._ack(message_id)
        elif delivery >= self._spec.max_deliveries:
            self._failures.pop(as_text(message_id), None)
            await self._dead_letter(message_id, fields, error, delivery)
        else:
            self._failures[as_text(message_id)] = error  # left pending: retried after a backoff

    async def _call_handler(self, event: E, message_id: Any) -> str | None:
        try:
            await self._handler(event)
        except Exception as exc:
            logger.warning(
                "handler of group %s failed on entry %s",
                self._spec.group,
                as_text(message_id),
                exc_info=True,
            )
            return f"handler failed: {type(exc).__name__}: {exc}"[:_MAX_REASON]
        return None

    async def _dead_letter(
        self, message_id: Any, fields: Mapping[Any, Any], reason: str, attempts: int
    ) -> None:
        spec = self._spec
        logger.error(
            "dead-lettering entry %s of %s for group %s: %s",
            as_text(message_id),
            spec.stream,
            spec.group,
            reason,
        )
        letter: dict[Any, Any] = {
            "topic": spec.topic,
            "group": spec.group,
            "entry_id": as_text(message_id),
            "type": field_text(fields, "type"),
            "v": field_text(fields, "v"),
            "data": field_text(fields, "data"),
            "reason": reason[:_MAX_REASON],
            "attempts": str(attempts),
            "consumer": spec.consumer,
            "failed_at": failed_now().isoformat(),
        }
        # One transaction: the entry is either dead-lettered and acked, or neither.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                spec.dead_letter_stream, letter, maxlen=spec.dead_letter_maxlen, approximate=True
            )
            pipe.xack(spec.stream, spec.group, message_id)
            await pipe.execute()

    async def _ack(self, message_id: Any) -> None:
        await self._redis.xack(self._spec.stream, self._spec.group, message_id)

    async def _announce(self) -> None:
        """Say this consumer is alive (``live_consumers`` counts recent announcements).

        Redis's own consumer idle time cannot tell: a blocking read that returns nothing
        neither creates the consumer nor refreshes it before Redis 7.2.
        """
        spec = self._spec
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(spec.presence_key, {spec.consumer: now})
            # Consumers gone for a day are forgotten; the key goes with its last consumer.
            pipe.zremrangebyscore(spec.presence_key, "-inf", now - 86_400)
            pipe.expire(spec.presence_key, 86_400)
            await pipe.execute()

    async def _heartbeat(self) -> None:
        spec = self._spec
        while True:
            await asyncio.sleep(spec.claim_idle_ms / 3000)
            try:
                await self._announce()
                held = list(self._held.values())
                if held:
                    await self._redis.xclaim(
                        spec.stream, spec.group, spec.consumer, 0, held, justid=True
                    )
            except RedisError:
                logger.warning("heartbeat of %s failed", spec.consumer, exc_info=True)


def _autoclaimed_ids(response: Any) -> list[Any]:
    """The ids an ``XAUTOCLAIM ... JUSTID`` claimed (redis-py returns just those)."""
    return list(response or [])


def entries_of(response: Any) -> list[tuple[Any, Any]]:
    """The entries of a one-stream ``XREADGROUP`` reply, RESP2 or RESP3."""
    if not response:
        return []
    if isinstance(response, Mapping):  # RESP3: {stream: [entries]}
        (batch,) = response.values()
        # RESP3 wraps the entry list in one more list.
        entries = batch[0] if batch and isinstance(batch[0], list) else batch
    else:  # RESP2: [[stream, entries]]
        entries = response[0][1]
    return [(message_id, fields) for message_id, fields in entries]


def field_text(fields: Mapping[Any, Any], name: str) -> str:
    """The text of field ``name`` ("" when absent), whether keys are bytes or str."""
    value = fields.get(name.encode(), fields.get(name))
    return "" if value is None else as_text(value)


def as_text(value: Any) -> str:
    """``value`` as text, whether the client decodes responses or not."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
