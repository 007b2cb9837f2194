"""``RedisStreamsEventBus``: the production event bus, on Redis Streams with consumer groups.

One stream per event type (``stream_prefix + type``), trimmed approximately to
``max_stream_length``. Each entry has three fields: ``type``, ``v`` (the event
class's version) and ``data`` (the event's JSON).

Consumer groups are created at ``$``, i.e. they receive what is published after
they first exist. A group is created once and then persists in Redis, so a
restarted consumer misses nothing; ``$`` only keeps a newly deployed subscriber
from being flooded with up to ``max_stream_length`` stale events it never asked
for. ``subscribe`` creates the group before it returns, so anything published
after that reaches the group.

A handler that raises leaves its entry in the group's pending list (PEL). Each
pass of a consumer first re-reads its own pending entries (``XREADGROUP`` at id
``0``) and then blocks for new ones (id ``>``), so a failed entry is retried on
every pass, at most about every ``block_ms`` when the stream is idle. There is no
dead-letter stream yet: an entry whose handler always fails is retried forever.
Entries that cannot be decoded (unknown type, bad JSON) are logged and acked,
so a poison message cannot loop forever. Decoding goes by the entry's ``type``
through the event registry; ``v`` is carried for consumers and later migrations
but not checked, since fields a reader does not know are ignored, which keeps
adding a field compatible.

A consumer re-reads only its own pending entries: entries left pending by a
consumer name that never comes back stay in the PEL (claiming them with
``XAUTOCLAIM`` belongs with the dead-letter stream, later). Use stable consumer
names, e.g. the pod name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from atrium.bus.base import (
    E,
    Event,
    Subscription,
    TaskSubscription,
    event_type_name,
    raise_if_cancel_requested,
)
from atrium.bus.events import EVENT_TYPES

logger = logging.getLogger("atrium.bus")


class RedisStreamsEventBus:
    """An ``EventBus`` on Redis Streams; see the module docstring for the semantics.

    The bus does not own ``redis``: ``close`` stops the subscriptions and leaves
    the client open for whoever created it.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream_prefix: str = "atrium:events:",
        max_stream_length: int = 100_000,
        block_ms: int = 1000,
        batch_size: int = 100,
        retry_delay_s: float = 1.0,
        event_types: Mapping[str, type[Event]] = EVENT_TYPES,
    ) -> None:
        if block_ms < 1:
            # BLOCK 0 waits forever, so failed entries would never be retried when idle.
            raise ValueError("block_ms must be at least 1")
        self._redis = redis
        self._prefix = stream_prefix
        self._max_stream_length = max_stream_length
        self._block_ms = block_ms
        self._batch_size = batch_size
        self._retry_delay_s = retry_delay_s
        self._event_types = event_types
        self._subscriptions: set[TaskSubscription] = set()

    def stream_name(self, topic: str) -> str:
        """The Redis key of the stream that carries events of type ``topic``."""
        return self._prefix + topic

    async def start(self) -> None:
        """Check the connection, so a wrong Redis URL fails at startup."""
        await self._redis.ping()

    async def close(self) -> None:
        """Stop every subscription; entries being handled stay pending for redelivery."""
        # Concurrently, so shutdown takes as long as the slowest stop, not the sum.
        await asyncio.gather(*(sub.stop() for sub in list(self._subscriptions)))

    async def publish(self, event: Event) -> str:
        """``XADD`` ``event`` to its type's stream; returns the stream entry id."""
        # Typed loosely because redis-py wants an invariant dict of its own unions.
        fields: dict[Any, Any] = {
            "type": event.type,
            "v": str(event.version),
            "data": event.model_dump_json(),
        }
        message_id = await self._redis.xadd(
            self.stream_name(event.type),
            fields,
            maxlen=self._max_stream_length,
            approximate=True,
        )
        return _text(message_id)

    async def subscribe(
        self,
        event_type: type[E],
        group: str,
        consumer: str,
        handler: Callable[[E], Awaitable[None]],
    ) -> Subscription:
        """Create ``group`` if needed and start ``consumer``; see ``EventBus.subscribe``."""
        topic = event_type_name(event_type)
        if self._event_types.get(topic) is not event_type:
            # Fail now: otherwise every entry would be undecodable, acked and lost.
            raise ValueError(f"event type {topic!r} is not in this bus's registry")
        worker = _StreamConsumer(
            self._redis,
            _ConsumerSpec(
                stream=self.stream_name(topic),
                group=group,
                consumer=consumer,
                block_ms=self._block_ms,
                batch=self._batch_size,
                retry_delay_s=self._retry_delay_s,
            ),
            _Decoder(event_type, self._event_types),
            handler,
        )
        await worker.ensure_group()
        task = asyncio.create_task(worker.run(), name=f"atrium.bus.{group}.{consumer}")
        subscription = TaskSubscription(task, self._subscriptions.discard)
        self._subscriptions.add(subscription)
        return subscription


@dataclass(frozen=True, slots=True)
class _ConsumerSpec:
    """Where a consumer reads from and how."""

    stream: str
    group: str
    consumer: str
    block_ms: int
    batch: int
    retry_delay_s: float  # after a Redis error, before reading again


class _PoisonError(Exception):
    """A stream entry that can never be turned into an event."""


class _Decoder(Generic[E]):
    """Turns a stream entry's fields back into the subscribed event class."""

    def __init__(self, event_type: type[E], registry: Mapping[str, type[Event]]) -> None:
        self._event_type = event_type
        self._registry = registry

    def decode(self, fields: Mapping[Any, Any]) -> E:
        type_name = _text(fields.get(b"type", fields.get("type", "")))
        data = fields.get(b"data", fields.get("data"))
        cls = self._registry.get(type_name)
        if cls is None or not issubclass(cls, self._event_type):
            raise _PoisonError(f"unknown event type {type_name!r}")
        if data is None:
            raise _PoisonError("entry has no 'data' field")
        try:
            event = cls.model_validate_json(data)
        except ValidationError as exc:
            raise _PoisonError(f"invalid {type_name} data: {exc}") from exc
        # issubclass above already guarantees this; isinstance lets the type checker see it.
        if not isinstance(event, self._event_type):
            raise _PoisonError(f"decoded {type_name} is not a {self._event_type.__name__}")
        return event


class _StreamConsumer(Generic[E]):
    """One consumer of a group: a loop of pending pass, then a blocking read of new entries."""

    def __init__(
        self,
        redis: aioredis.Redis,
        spec: _ConsumerSpec,
        decoder: _Decoder[E],
        handler: Callable[[E], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self._spec = spec
        self._decoder = decoder
        self._handler = handler

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it already exists."""
        spec = self._spec
        try:
            await self._redis.xgroup_create(spec.stream, spec.group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until cancelled, riding out Redis errors."""
        while True:
            try:
                await self._consume()
            except RedisError:
                # Redis restarted or the network blipped. Without persistence the
                # group may be gone too, so it is recreated before reading again.
                logger.exception("event consumer %s lost Redis; retrying", self._spec.consumer)
                await asyncio.sleep(self._spec.retry_delay_s)

    async def _consume(self) -> None:
        await self.ensure_group()
        while True:
            await self._pending_pass()
            await self._read(">", block=self._spec.block_ms)

    async def _pending_pass(self) -> None:
        # Walk this consumer's PEL once from the start; an entry that fails again
        # stays pending and waits for the next pass instead of spinning here.
        last_id = "0"
        while True:
            entries = await self._read(last_id, block=None)
            if not entries:
                return
            last_id = _text(entries[-1][0])

    async def _read(self, after: str, *, block: int | None) -> list[tuple[Any, Any]]:
        raise_if_cancel_requested()
        spec = self._spec
        response = await self._redis.xreadgroup(
            spec.group, spec.consumer, {spec.stream: after}, count=spec.batch, block=block
        )
        entries = _entries(response)
        for message_id, fields in entries:
            await self._handle(message_id, fields)
        return entries

    async def _handle(self, message_id: Any, fields: Mapping[Any, Any] | None) -> None:
        if not fields:
            # A pending entry whose data the stream trimmed away: nothing left to deliver.
            logger.warning("acking trimmed entry %s of %s", _text(message_id), self._spec.stream)
            await self._ack(message_id)
            return
        try:
            event = self._decoder.decode(fields)
        except _PoisonError:
            logger.exception(
                "acking undecodable entry %s of %s", _text(message_id), self._spec.stream
            )
            await self._ack(message_id)
            return
        if await self._call_handler(event, message_id):
            await self._ack(message_id)

    async def _call_handler(self, event: E, message_id: Any) -> bool:
        try:
            await self._handler(event)
        except Exception:
            # Left pending: the next pending pass delivers it again.
            logger.exception(
                "handler of group %s failed on entry %s", self._spec.group, _text(message_id)
            )
            return False
        return True

    async def _ack(self, message_id: Any) -> None:
        await self._redis.xack(self._spec.stream, self._spec.group, message_id)


def _entries(response: Any) -> list[tuple[Any, Any]]:
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


def _text(value: Any) -> str:
    """``value`` as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)
