"""``RedisStreamsEventBus``: the production event bus, on Redis Streams with consumer groups.

One stream per event type (``stream_prefix + type``), trimmed approximately to
``max_stream_length``. Each entry has the fields ``type``, ``v`` (the event class's
version) and ``data`` (the event's JSON); a retried dead letter also carries
``only``, the one group it is meant for.

Consumer groups are created at ``$``, i.e. they receive what is published after
they first exist. A group is created once and then persists in Redis, so a
restarted consumer misses nothing; ``$`` only keeps a newly deployed subscriber
from being flooded with up to ``max_stream_length`` stale events it never asked
for (``replay`` starts a group in the past on purpose). ``subscribe`` creates the
group before it returns, so anything published after that reaches the group.

Delivery (see ``_redis_consumer``): at least once. A handler that raises leaves its
entry pending; it is retried with exponential backoff and dead-lettered after
``max_deliveries`` deliveries. Entries a dead consumer left pending are taken over
by another consumer of the group after ``claim_idle_ms``. Undecodable entries
(unknown type or version, bad JSON) go to the dead-letter stream at once, with the
reason. Handlers must be idempotent: ``atrium.bus.dedup.IdempotentHandler`` makes
one so by event id.

Publishing retries connection failures with bounded exponential backoff, so a Redis
restart under load costs a pause, not events. A publish whose reply was lost may be
retried after Redis stored it; the duplicate has the same event id.

A group of one replica alone (named by ``replica_group``) is destroyed with its
presence set when its consumer stops cleanly; one whose replica died is destroyed by
the housekeeping every bus runs (``replica_group_idle_s``) once none of its consumers
has sent a heartbeat for that long. Shared groups and the dead letters are never swept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from atrium.bus._redis_consumer import (
    ONLY_FIELD,
    ConsumerSpec,
    Decoder,
    StreamConsumer,
    as_text,
    field_text,
)
from atrium.bus.admin import DeadLetter, GroupInfo, StreamInfo
from atrium.bus.base import (
    E,
    Event,
    Subscription,
    TaskSubscription,
    cancel_and_wait,
    event_type_name,
    is_replica_group,
    raise_if_cancel_requested,
)
from atrium.bus.dedup import IdempotentHandler
from atrium.bus.events import EVENT_TYPES
from atrium.core.errors import InvalidRequestError, NotFoundError

logger = logging.getLogger("atrium.bus")

_MAX_SEQ = 2**64 - 1

DEAD_LETTERS = "dead-letters"
"""The dead-letter stream's key, after the prefix (no event type has a dash)."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retries, reclaim and dead-lettering, shared by every consumer of a bus."""

    max_deliveries: int = 5
    claim_idle_ms: int = 30_000
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    publish_attempts: int = 6
    publish_backoff_s: float = 0.1
    publish_backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_deliveries < 1 or self.publish_attempts < 1:
            raise ValueError("max_deliveries and publish_attempts must be at least 1")
        if self.claim_idle_ms < 3:
            raise ValueError("claim_idle_ms must be at least 3")


class RedisStreamsEventBus:
    """An ``EventBus`` and ``BusAdmin`` on Redis Streams; see the module docstring.

    The bus does not own ``redis``: ``close`` stops the subscriptions and leaves
    the client open for whoever created it. With ``replica_group_idle_s``, ``start``
    also starts the housekeeping that sweeps abandoned replica groups every
    ``housekeeping_interval_s`` (a quarter of the bound, at most five minutes, by default).
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
        policy: DeliveryPolicy | None = None,
        replica_group_idle_s: float | None = None,
        housekeeping_interval_s: float | None = None,
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
        self._policy = policy or DeliveryPolicy()
        self._subscriptions: set[TaskSubscription] = set()
        self._replica_group_idle_s = replica_group_idle_s
        self._housekeeping_interval_s = housekeeping_interval_s or min(
            300.0, (replica_group_idle_s or 0) / 4
        )
        self._housekeeping: asyncio.Task[None] | None = None

    durable = True

    def idempotent(
        self, handler: Callable[[E], Awaitable[None]], *, scope: str
    ) -> IdempotentHandler[E]:
        """``handler`` handling each event id once per ``scope`` (``IdempotentHandler`` on
        this bus's Redis, keys under the stream prefix, the lease the claim timeout)."""
        return IdempotentHandler(
            self._redis, handler, scope=scope, prefix=self._prefix + "seen:",
            lease_ms=self._policy.claim_idle_ms,
        )  # fmt: skip

    @property
    def dead_letter_stream(self) -> str:
        """The Redis key of the dead-letter stream."""
        return self._prefix + DEAD_LETTERS

    def stream_name(self, topic: str) -> str:
        """The Redis key of the stream that carries events of type ``topic``."""
        return self._prefix + topic

    async def start(self) -> None:
        """Check the connection, so a wrong Redis URL fails at startup; start housekeeping."""
        await self._redis.ping()
        if self._replica_group_idle_s is not None and self._housekeeping is None:
            self._housekeeping = asyncio.create_task(
                self._keep_house(self._replica_group_idle_s), name="atrium.bus.housekeeping"
            )

    async def close(self) -> None:
        """Stop every subscription; entries being handled stay pending for redelivery."""
        if self._housekeeping is not None:
            await cancel_and_wait(self._housekeeping)
            self._housekeeping = None
        # Concurrently, so shutdown takes as long as the slowest stop, not the sum.
        await asyncio.gather(*(sub.stop() for sub in list(self._subscriptions)))

    async def sweep_replica_groups(self, idle_s: float) -> list[tuple[str, str]]:
        """Destroy the replica groups none of whose consumers has sent a heartbeat for
        ``idle_s`` seconds (their replica died without a clean shutdown), with their
        presence sets; returns the ``(topic, group)`` pairs destroyed.

        Only groups named by ``replica_group`` are looked at: shared groups keep their
        place in the stream while their consumers are away, and the dead letters too.
        """
        cutoff = time.time() - idle_s
        swept: list[tuple[str, str]] = []
        for topic in await self._topics():
            stream = self.stream_name(topic)
            try:
                groups = await self._redis.xinfo_groups(stream)
            except ResponseError:
                continue  # deleted between the scan and now
            for raw in groups:
                group = _group_info(raw).name
                if is_replica_group(group) and await self._abandoned(stream, group, cutoff):
                    async with self._redis.pipeline(transaction=True) as pipe:
                        pipe.xgroup_destroy(stream, group)
                        pipe.delete(self.presence_key(stream, group))
                        await pipe.execute()
                    swept.append((topic, group))
        return swept

    async def _abandoned(self, stream: str, group: str, cutoff: float) -> bool:
        """No consumer of the group has announced itself since ``cutoff`` (epoch seconds)."""
        heard = await self._redis.zcount(self.presence_key(stream, group), cutoff, "+inf")
        return int(heard) == 0

    async def _keep_house(self, idle_s: float) -> None:
        while True:
            await asyncio.sleep(self._housekeeping_interval_s)
            raise_if_cancel_requested()
            try:
                swept = await self.sweep_replica_groups(idle_s)
            except RedisError:
                logger.warning("sweeping abandoned replica groups failed", exc_info=True)
                continue
            for topic, group in swept:
                logger.warning(
                    "destroyed group %s of %s: no consumer heard from for %.0f s",
                    group, topic, idle_s,
                )  # fmt: skip

    async def publish(self, event: Event) -> str:
        """``XADD`` ``event`` to its type's stream; returns the stream entry id."""
        fields = {"type": event.type, "v": str(event.version), "data": event.model_dump_json()}
        return await self._xadd(self.stream_name(event.type), fields)

    async def _xadd(self, stream: str, fields: dict[str, str]) -> str:
        policy = self._policy
        for attempt in range(1, policy.publish_attempts + 1):
            try:
                # Typed loosely because redis-py wants an invariant dict of its own unions.
                loose: dict[Any, Any] = dict(fields)
                message_id = await self._redis.xadd(
                    stream, loose, maxlen=self._max_stream_length, approximate=True
                )
            except (RedisConnectionError, RedisTimeoutError):
                if attempt == policy.publish_attempts:
                    raise
                delay = min(
                    policy.publish_backoff_max_s, policy.publish_backoff_s * 2 ** (attempt - 1)
                )
                logger.warning("publishing to %s failed (attempt %d); retrying", stream, attempt)
                await asyncio.sleep(delay)
            else:
                return as_text(message_id)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def subscribe(
        self,
        event_type: type[E],
        group: str,
        consumer: str,
        handler: Callable[[E], Awaitable[None]],
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Create ``group`` if needed and start ``consumer``; see ``EventBus.subscribe``."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        topic = event_type_name(event_type)
        if self._event_types.get(topic) is not event_type:
            # Fail now: otherwise every entry would be undecodable and dead-lettered.
            raise ValueError(f"event type {topic!r} is not in this bus's registry")
        worker = StreamConsumer(
            self._redis,
            replace(self._spec(topic, group, consumer), concurrency=concurrency),
            Decoder(event_type, self._event_types),
            handler,
        )
        await worker.join()
        task = asyncio.create_task(worker.run(), name=f"atrium.bus.{group}.{consumer}")
        subscription = TaskSubscription(task, self._subscriptions.discard)
        self._subscriptions.add(subscription)
        return subscription

    def _spec(self, topic: str, group: str, consumer: str) -> ConsumerSpec:
        policy = self._policy
        return ConsumerSpec(
            stream=self.stream_name(topic),
            topic=topic,
            group=group,
            consumer=consumer,
            block_ms=self._block_ms,
            batch=self._batch_size,
            retry_delay_s=self._retry_delay_s,
            max_deliveries=policy.max_deliveries,
            claim_idle_ms=policy.claim_idle_ms,
            backoff_s=policy.backoff_s,
            backoff_max_s=policy.backoff_max_s,
            dead_letter_stream=self.dead_letter_stream,
            dead_letter_maxlen=self._max_stream_length,
            presence_key=self.presence_key(self.stream_name(topic), group),
            ephemeral=is_replica_group(group),
        )

    # -- BusAdmin ---------------------------------------------------------------------

    async def streams(self) -> list[StreamInfo]:
        """Every event stream under the prefix with its groups (the dead letters excluded)."""
        infos = []
        for topic in await self._topics():
            stream = self.stream_name(topic)
            try:
                length = int(await self._redis.xlen(stream))
                groups = await self._redis.xinfo_groups(stream)
                infos.append(
                    StreamInfo(topic, length, [await self._group(stream, g) for g in groups])
                )
            except ResponseError:
                continue  # deleted between the scan and now
        return infos

    async def _group(self, stream: str, raw: Mapping[Any, Any]) -> GroupInfo:
        """A group with its live consumers: those whose heartbeat is recent."""
        info = _group_info(raw)
        since = time.time() - self._policy.claim_idle_ms / 1000
        live = await self._redis.zcount(self.presence_key(stream, info.name), since, "+inf")
        return replace(info, live_consumers=int(live))

    def presence_key(self, stream: str, group: str) -> str:
        """The sorted set of a group's consumers by their last heartbeat (not a stream)."""
        return f"{stream}:live:{group}"

    async def _topics(self) -> list[str]:
        topics = set()
        async for key in self._redis.scan_iter(
            match=_glob_escape(self._prefix) + "*", _type="stream"
        ):
            topic = as_text(key)[len(self._prefix) :]
            if topic != DEAD_LETTERS:
                topics.add(topic)
        return sorted(topics)

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        entries: Any = await self._redis.xrevrange(self.dead_letter_stream, count=limit)
        return [_dead_letter(entry_id, fields) for entry_id, fields in entries]

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter by id; ``NotFoundError`` when there is none."""
        _check_id(dead_letter_id, "id")
        entries: Any = await self._redis.xrange(
            self.dead_letter_stream, dead_letter_id, dead_letter_id
        )
        if not entries:
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")
        entry_id, fields = entries[0]
        return _dead_letter(entry_id, fields)

    async def retry_dead_letter(self, dead_letter_id: str) -> str:
        """Publish the event again for its group alone, then drop the dead letter."""
        letter = await self.dead_letter(dead_letter_id)
        fields = {"type": letter.event_type, "v": letter.version, "data": letter.data}
        fields[ONLY_FIELD] = letter.group
        new_id = await self._xadd(self.stream_name(letter.topic), fields)
        await self._redis.xdel(self.dead_letter_stream, dead_letter_id)
        return new_id

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Drop a dead letter; ``NotFoundError`` when there is none."""
        _check_id(dead_letter_id, "id")
        if not await self._redis.xdel(self.dead_letter_stream, dead_letter_id):
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")

    async def replay(self, topic: str, group: str, from_id: str) -> None:
        """Move ``group`` back to ``from_id`` (creating it there when new); see ``BusAdmin``."""
        _check_id(from_id, "from_id")
        stream = self.stream_name(topic)
        if topic not in self._event_types:
            raise NotFoundError(f"no event type {topic!r}")
        try:
            await self._redis.xgroup_create(stream, group, id=from_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise InvalidRequestError(f"cannot replay from {from_id!r}: {exc}") from exc
            await self._redis.xgroup_setid(stream, group, from_id)


def replay_offset(from_id: str | None, since: datetime | None) -> str:
    """The stream id to replay after: ``from_id`` as given, or ``since`` in epoch ms."""
    if since is not None and from_id is None:
        ms = int(since.timestamp() * 1000)
        return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0"
    if from_id is not None and since is None:
        return from_id
    raise InvalidRequestError("give exactly one of from_id and since", param="from_id")


def _check_id(value: str, param: str) -> None:
    ms, _, seq = value.partition("-")
    if not (ms.isdigit() and (not seq or seq.isdigit())) or len(value) > 41:
        raise InvalidRequestError(f"{value!r} is not a stream id (<ms> or <ms>-<seq>)", param=param)


def _glob_escape(prefix: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix)


def _group_info(raw: Mapping[Any, Any]) -> GroupInfo:
    def get(name: str) -> Any:
        return raw.get(name, raw.get(name.encode()))

    lag = get("lag")
    return GroupInfo(
        name=as_text(get("name")),
        consumers=int(get("consumers") or 0),
        pending=int(get("pending") or 0),
        lag=None if lag is None else int(lag),
        last_delivered_id=as_text(get("last-delivered-id")),
    )


def _dead_letter(entry_id: Any, fields: Mapping[Any, Any] | None) -> DeadLetter:
    fields = fields or {}
    return DeadLetter(
        id=as_text(entry_id),
        topic=field_text(fields, "topic"),
        group=field_text(fields, "group"),
        entry_id=field_text(fields, "entry_id"),
        event_type=field_text(fields, "type"),
        version=field_text(fields, "v"),
        data=field_text(fields, "data"),
        reason=field_text(fields, "reason"),
        attempts=int(field_text(fields, "attempts") or 0),
        consumer=field_text(fields, "consumer"),
        failed_at=datetime.fromisoformat(field_text(fields, "failed_at")),
    )
