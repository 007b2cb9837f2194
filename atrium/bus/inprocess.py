"""``InProcessEventBus``: the embedded event bus, asyncio queues inside one process.

Each consumer group of an event type has one bounded queue; publishing puts the
event on every group's queue (fan-out) and the group's consumers take from that
queue in turn (competing consumers). The same delivery semantics as Redis Streams,
within one process: retries with backoff, dead letters with the reason after
``max_attempts``, a bounded history per type to replay from, and message ids of the
same ``<ms>-<seq>`` shape. Nothing survives the process. As on Redis, a group of one
replica alone (named by ``replica_group``) goes when its last consumer stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic

from atrium.bus.admin import DeadLetter, GroupInfo, StreamInfo, failed_now
from atrium.bus.base import (
    E,
    Event,
    Subscription,
    TaskSubscription,
    event_type_name,
    is_replica_group,
)
from atrium.bus.events import EVENT_TYPES
from atrium.core.errors import InvalidRequestError, NotFoundError

logger = logging.getLogger("atrium.bus")


@dataclass(eq=False)
class _Group:
    """A consumer group: its queue and what its consumers hold unacknowledged."""

    queue: asyncio.Queue[tuple[str, Event]]
    consumers: int = 0
    in_flight: int = 0
    last_delivered_id: str = "0-0"


@dataclass(eq=False)
class _Topic:
    """An event type's retained history and its groups."""

    history: deque[tuple[str, Event]]
    groups: dict[str, _Group] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Letter:
    letter: DeadLetter
    event: Event


class InProcessEventBus:
    """An ``EventBus`` and ``BusAdmin`` for a single process, with Redis's group semantics.

    A handler that raises is retried in place up to ``max_attempts`` times, waiting
    ``retry_backoff_s`` and then twice as long after each failure (at most
    ``retry_backoff_max_s``); then the event becomes a dead letter (the newest
    ``dead_letter_limit`` are kept). A group's queue holds at most ``max_queue_size``
    events; beyond that new events for the group are dropped with a warning, as a
    bounded Redis stream trims old ones. The last ``history_size`` events of each type
    are kept for ``replay``.
    """

    durable = False

    def __init__(
        self,
        *,
        max_queue_size: int = 100_000,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.05,
        retry_backoff_max_s: float = 10.0,
        history_size: int = 10_000,
        dead_letter_limit: int = 10_000,
        event_types: Mapping[str, type[Event]] = EVENT_TYPES,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._max_queue_size = max_queue_size
        self._retry = _Retry(max_attempts, retry_backoff_s, retry_backoff_max_s)
        self._history_size = history_size
        # topic -> its history and groups; groups outlive their consumers, as in Redis.
        self._topics: dict[str, _Topic] = {}
        self._subscriptions: set[TaskSubscription] = set()
        self._ids = _IdClock()
        self._dead: dict[str, _Letter] = {}
        self._dead_letter_limit = dead_letter_limit
        self._event_types = event_types

    async def start(self) -> None:
        """Nothing to acquire; present for the protocol."""

    async def close(self) -> None:
        """Stop every subscription; events still queued are discarded."""
        # Concurrently, so shutdown takes as long as the slowest stop, not the sum.
        await asyncio.gather(*(sub.stop() for sub in list(self._subscriptions)))
        self._topics.clear()

    async def publish(self, event: Event) -> str:
        """Queue ``event`` for every group of its type; returns its ``<ms>-<seq>`` id."""
        message_id = self._ids.next()
        topic = self._topic(event.type)
        topic.history.append((message_id, event))
        for name, group in topic.groups.items():
            self._put(name, group, message_id, event)
        return message_id

    async def subscribe(
        self,
        event_type: type[E],
        group: str,
        consumer: str,
        handler: Callable[[E], Awaitable[None]],
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Start ``consumer`` of ``group``; see ``EventBus.subscribe``."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        topic = event_type_name(event_type)
        state = self._group(topic, group)
        worker = _Consumer(
            state, event_type, handler, self._retry, self._dead_letterer(topic, group, consumer)
        )
        state.consumers += 1
        task = asyncio.create_task(
            _run_at_once(worker, concurrency), name=f"atrium.bus.{group}.{consumer}"
        )

        def stopped(subscription: TaskSubscription) -> None:
            if subscription in self._subscriptions:  # stop() may run twice
                state.consumers -= 1
                self._subscriptions.discard(subscription)
                if state.consumers == 0 and is_replica_group(group):
                    self._drop_group(topic, group, state)

        subscription = TaskSubscription(task, stopped)
        self._subscriptions.add(subscription)
        return subscription

    def _topic(self, name: str) -> _Topic:
        if name not in self._topics:
            self._topics[name] = _Topic(deque(maxlen=self._history_size))
        return self._topics[name]

    def _group(self, topic: str, group: str) -> _Group:
        groups = self._topic(topic).groups
        if group not in groups:
            groups[group] = _Group(asyncio.Queue(maxsize=self._max_queue_size))
        return groups[group]

    def _drop_group(self, topic: str, name: str, state: _Group) -> None:
        known = self._topics.get(topic)
        if known is not None and known.groups.get(name) is state:
            del known.groups[name]

    def _put(self, name: str, group: _Group, message_id: str, event: Event) -> None:
        try:
            group.queue.put_nowait((message_id, event))
        except asyncio.QueueFull:
            logger.warning("group %r is full; dropped %s event %s", name, event.type, event.id)

    def _dead_letterer(self, topic: str, group: str, consumer: str) -> _DeadLetterSink:
        def sink(message_id: str, event: Event, reason: str, attempts: int) -> None:
            letter = DeadLetter(
                id=self._ids.next(), topic=topic, group=group, entry_id=message_id,
                event_type=event.type, version=str(event.version),
                data=event.model_dump_json(), reason=reason, attempts=attempts,
                consumer=consumer, failed_at=failed_now(),
            )  # fmt: skip
            logger.error(
                "dead-lettering %s event %s for group %s: %s", topic, event.id, group, reason
            )
            self._dead[letter.id] = _Letter(letter, event)
            while len(self._dead) > self._dead_letter_limit:
                del self._dead[next(iter(self._dead))]

        return sink

    # -- BusAdmin ---------------------------------------------------------------------

    async def streams(self) -> list[StreamInfo]:
        """Every event type seen, with its retained length and groups."""
        return [
            StreamInfo(
                name,
                len(topic.history),
                [
                    GroupInfo(
                        group_name,
                        g.consumers,
                        g.in_flight,
                        g.queue.qsize(),
                        g.last_delivered_id,
                        live_consumers=g.consumers,  # every subscription here is alive
                    )
                    for group_name, g in sorted(topic.groups.items())
                ],
            )
            for name, topic in sorted(self._topics.items())
        ]

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        return [entry.letter for entry in reversed(self._dead.values())][:limit]

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter by id; ``NotFoundError`` when there is none."""
        return self._letter(dead_letter_id).letter

    async def retry_dead_letter(self, dead_letter_id: str) -> str:
        """Queue the event again for the group that gave up on it, and drop the letter."""
        entry = self._letter(dead_letter_id)
        message_id = self._ids.next()
        group = self._group(entry.letter.topic, entry.letter.group)
        self._put(entry.letter.group, group, message_id, entry.event)
        del self._dead[dead_letter_id]
        return message_id

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Drop a dead letter; ``NotFoundError`` when there is none."""
        self._letter(dead_letter_id)
        del self._dead[dead_letter_id]

    async def replay(self, topic: str, group: str, from_id: str) -> None:
        """Queue ``topic``'s retained events after ``from_id`` for ``group`` again."""
        after = _parse_id(from_id)
        if topic not in self._event_types:
            raise NotFoundError(f"no event type {topic!r}")
        state = self._group(topic, group)
        for message_id, event in list(self._topic(topic).history):
            if _parse_id(message_id) > after:
                self._put(group, state, message_id, event)

    def _letter(self, dead_letter_id: str) -> _Letter:
        entry = self._dead.get(dead_letter_id)
        if entry is None:
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")
        return entry


_DeadLetterSink = Callable[[str, Event, str, int], None]


class _IdClock:
    """Message ids shaped like Redis stream ids: ``<unix ms>-<seq>``, strictly increasing."""

    def __init__(self) -> None:
        self._last = (0, 0)

    def next(self) -> str:
        ms = time.time_ns() // 1_000_000
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return f"{self._last[0]}-{self._last[1]}"


def _parse_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise InvalidRequestError(
            f"{value!r} is not a stream id (<ms> or <ms>-<seq>)", param="from_id"
        ) from None


@dataclass(frozen=True, slots=True)
class _Retry:
    max_attempts: int
    backoff_s: float
    backoff_max_s: float

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))


async def _run_at_once(worker: _Consumer[E], concurrency: int) -> None:
    """Run ``concurrency`` delivery loops of ``worker`` on its group's queue."""
    if concurrency == 1:
        await worker.run()
        return
    await asyncio.gather(*(worker.run() for _ in range(concurrency)))


class _Consumer(Generic[E]):
    """One consumer: takes events off its group's queue and hands them to the handler."""

    def __init__(
        self,
        group: _Group,
        event_type: type[E],
        handler: Callable[[E], Awaitable[None]],
        retry: _Retry,
        dead_letter: _DeadLetterSink,
    ) -> None:
        self._group = group
        self._event_type = event_type
        self._handler = handler
        self._retry = retry
        self._dead_letter = dead_letter

    async def run(self) -> None:
        queue = self._group.queue
        while True:
            message_id, event = await queue.get()
            self._group.in_flight += 1
            self._group.last_delivered_id = max(
                self._group.last_delivered_id, message_id, key=_parse_id
            )
            try:
                await self._deliver(message_id, event)
            except asyncio.CancelledError:
                # Stopped mid-delivery: the event was not acked, so give it back to
                # the group, where another consumer (or a later one) takes it.
                self._give_back(message_id, event)
                raise
            finally:
                self._group.in_flight -= 1
                queue.task_done()

    def _give_back(self, message_id: str, event: Event) -> None:
        try:
            self._group.queue.put_nowait((message_id, event))
        except asyncio.QueueFull:
            logger.warning("group is full; dropped %s event %s on stop", event.type, event.id)

    async def _deliver(self, message_id: str, event: Event) -> None:
        if not isinstance(event, self._event_type):
            reason = f"event of class {type(event).__name__} is not a {self._event_type.__name__}"
            self._dead_letter(message_id, event, reason, 0)
            return
        error = ""
        for attempt in range(1, self._retry.max_attempts + 1):
            error = await self._attempt(event, attempt)
            if not error:
                return
            if attempt < self._retry.max_attempts:
                await asyncio.sleep(self._retry.delay(attempt))
        self._dead_letter(message_id, event, error, self._retry.max_attempts)

    async def _attempt(self, event: E, attempt: int) -> str:
        try:
            await self._handler(event)
        except Exception as exc:
            logger.warning(
                "handler failed on %s event %s (attempt %d)", event.type, event.id, attempt,
                exc_info=True,
            )  # fmt: skip
            return f"handler failed: {type(exc).__name__}: {exc}"
        return ""
