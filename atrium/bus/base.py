"""The ``EventBus`` protocol, the ``Event`` base class and the non-blocking ``EventPublisher``.

Delivery contract shared by every backend:

- Fan-out across groups: every distinct ``group`` subscribed to an event type gets
  every event of that type published after the group was first created.
- Competing consumers within a group: each event goes to one consumer of the group.
- At-least-once: an event is acknowledged only after its handler returns without
  raising; a handler that raises sees the event again. Handlers must be idempotent
  (``Event.id`` is the natural deduplication key; ``atrium.bus.dedup.once_per_event``
  makes one so on Redis). A handler that returns before its work is durable (queued for
  a later write) loses that work when its process dies: it should return once it is
  written (see ``subscribe``'s ``concurrency`` for keeping such writes batched).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar, Protocol, TypeVar, runtime_checkable
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

logger = logging.getLogger("atrium.bus")


class _EventIds:
    """Event ids: 32 hex digits, a random prefix per process and a counter.

    Unique (the dedup key across processes), not secret: a counter instead of a
    call into the OS for random bytes per event (``uuid4``), which the gateway
    pays for every request. A forked child draws a prefix of its own.
    """

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(secrets.randbelow(2**63))

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter) % 2**64:016x}"


_new_event_id = _EventIds().new


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base class of every event on the bus.

    Subclasses set the class variable ``type`` (the topic, e.g. ``"request.completed"``)
    and bump ``version`` when they change shape incompatibly. Events are frozen: the
    in-process bus hands one instance to every group, so no handler may change what
    another one sees.
    """

    model_config = ConfigDict(frozen=True)

    type: ClassVar[str]
    version: ClassVar[int] = 1
    #: Who publishes it (the module), for the event catalogue (docs/events.md).
    publisher: ClassVar[str] = ""

    id: str = Field(default_factory=_new_event_id)
    occurred_at: datetime = Field(default_factory=_utc_now)

    @field_validator("occurred_at")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        # A naive timestamp is taken as UTC rather than local time: events cross
        # machines, and local time means something different on each of them.
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


E = TypeVar("E", bound=Event)


def replica_group(purpose: str) -> str:
    """A consumer group of this instance alone (``<purpose>-<host>-<pid>-<random>``).

    Subscribing in a group of its own is how every replica, even two in one process,
    hears every event of a type (route and key changes), instead of sharing the work.
    """
    return f"{purpose}-{socket.gethostname()}-{os.getpid()}-{uuid4().hex[:8]}"


#: The names ``replica_group`` makes (the same pattern is in deploy/prometheus-rules.yaml).
REPLICA_GROUP = re.compile(r"[a-z]+-.+-[0-9]+-[0-9a-f]{8}")


def is_replica_group(group: str) -> bool:
    """Whether ``group`` belongs to one replica alone: one left behind by a replica that is
    gone has no consumers, and that is no outage."""
    return REPLICA_GROUP.fullmatch(group) is not None


def event_type_name(event_type: type[Event]) -> str:
    """The topic of ``event_type``; raises ``TypeError`` for a class that sets none."""
    name = getattr(event_type, "type", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{event_type.__qualname__} does not set the class variable 'type'")
    return name


@runtime_checkable
class Subscription(Protocol):
    """A running subscription; ``stop`` ends its delivery loop."""

    async def stop(self) -> None:
        """Stop receiving; an event being handled and not yet acked is redelivered later."""


@runtime_checkable
class EventBus(Protocol):
    """Publishes typed events and delivers them to consumer groups (see module docstring)."""

    #: Whether an event not yet acknowledged outlives this process, to be handed to another
    #: consumer (Redis Streams); in process it dies with the process whatever a handler does.
    durable: bool

    async def start(self) -> None:
        """Acquire what the bus needs (e.g. check the connection)."""

    async def close(self) -> None:
        """Stop every subscription this bus started."""

    async def publish(self, event: Event) -> str:
        """Publish ``event``; returns the backend's message id."""

    async def subscribe(
        self,
        event_type: type[E],
        group: str,
        consumer: str,
        handler: Callable[[E], Awaitable[None]],
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Deliver events of ``event_type`` to ``handler`` as ``consumer`` of ``group``.

        The group exists when this returns, so every event published afterwards
        reaches it. With ``concurrency`` above 1 the consumer hands up to that many
        events to ``handler`` at once (each still acknowledged alone, when its own call
        returns), for a handler that waits on work done in batches, such as the audit
        consumer waiting for its entry's commit; the order of handling is then not the
        order of publishing.
        """


class TaskSubscription:
    """A subscription served by one background task; the backends share it."""

    def __init__(
        self,
        task: asyncio.Task[None],
        on_stop: Callable[[TaskSubscription], None],
    ) -> None:
        self._task = task
        self._on_stop = on_stop
        task.add_done_callback(_log_task_crash)

    async def stop(self) -> None:
        """Cancel the delivery task and wait until it has ended."""
        await cancel_and_wait(self._task)
        self._on_stop(self)


async def cancel_and_wait(task: asyncio.Task[None], *, recancel_after_s: float = 1.0) -> None:
    """Cancel ``task`` and return once it has ended, however it ends.

    On Python 3.11 ``asyncio.wait_for`` (which redis-py uses to send every
    command) swallows a cancellation that arrives just as its inner call
    completes. Loops that call ``raise_if_cancel_requested`` notice that at
    their next step; for a task stuck elsewhere the cancellation is repeated.
    """
    while not task.done():
        task.cancel()
        # asyncio.wait does not raise the task's CancelledError, yet still lets a
        # cancellation of the caller itself propagate.
        await asyncio.wait([task], timeout=recancel_after_s)


async def group_commit_wait(
    waiting: asyncio.Event, flush_seconds: float, delay_seconds: float
) -> None:
    """Return once a handler waits for its commit (``waiting`` set), ``delay_seconds``
    later so that the other handlers the consumer started together hand over their
    events meanwhile (one transaction for all, and under load a bigger next batch), or
    after ``flush_seconds`` when none waits. ``waiting`` is cleared.

    The loop of a consumer that acknowledges an event only once it is committed (the
    audit and usage recorders on a durable bus).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(flush_seconds):
            await waiting.wait()
    if waiting.is_set():
        await asyncio.sleep(delay_seconds)
        waiting.clear()


def raise_if_cancel_requested() -> None:
    """Raise ``CancelledError`` if the current task was cancelled and carried on.

    Background loops call this at each step to honour a cancellation that a
    library swallowed (see ``cancel_and_wait``).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _log_task_crash(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("event bus task %s crashed", task.get_name(), exc_info=exc)


class EventPublisher:
    """Publishes off the hot path: request handlers enqueue, a background task publishes.

    ``publish_nowait`` never waits. When the queue is full the event is dropped and
    ``dropped`` counts it: losing an audit event is better than stalling a request on
    a slow bus. ``failed`` counts publishes the bus refused; ``published`` those it took.

    ``publish_urgent`` is for the events whose loss is a security gap (a revoked key, a
    changed team): they wait in a queue of their own that is never full (they are rare,
    one per admin change or sign-out), a task of their own publishes them so a backlog of
    ordinary events does not delay them, and a refused publish is retried with backoff
    (``retry_backoff_s`` doubling to ``retry_backoff_max_s``) until the bus takes it.
    Only ``close`` gives up on them, after ``close_timeout_s``, and logs each one.
    The publisher does not own the bus: ``close`` leaves the bus open.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        max_queue_size: int = 10_000,
        close_timeout_s: float = 5.0,
        retry_backoff_s: float = 0.1,
        retry_backoff_max_s: float = 5.0,
    ) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_queue_size)
        self._close_timeout_s = close_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._urgent = _UrgentQueue(retry_backoff_s, retry_backoff_max_s)
        self._urgent_task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.failed = 0
        self.published = 0

    async def start(self) -> None:
        """Start the background tasks that drain the queues into the bus."""
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="atrium.bus.publisher")
        if self._urgent_task is None:
            self._urgent_task = asyncio.create_task(
                self._drain_urgent(), name="atrium.bus.publisher.urgent"
            )

    def publish_nowait(self, event: Event) -> bool:
        """Queue ``event`` for publishing; False (and ``dropped`` + 1) when full or closed."""
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    def publish_urgent(self, event: Event) -> bool:
        """Queue ``event`` to be published however full the ordinary queue is (see the
        class docstring); False (and ``dropped`` + 1) only once the publisher is closed."""
        if self._closed:
            self.dropped += 1
            logger.error("event publisher closed: %s event %s not published", event.type, event.id)
            return False
        self._urgent.put(event)
        return True

    async def close(self) -> None:
        """Publish what is queued, waiting at most ``close_timeout_s``, then stop."""
        self._closed = True
        tasks = [t for t in (self._task, self._urgent_task) if t is not None]
        if tasks:
            await self._drain_then_stop(tasks)
            self._task = self._urgent_task = None
        if not self._queue.empty():
            logger.warning("event publisher closed with %d events unpublished", self._queue.qsize())
            self.dropped += self._queue.qsize()
        for event in self._urgent.take_all():
            logger.error("event publisher closed: %s event %s not published", event.type, event.id)
            self.dropped += 1

    async def _drain_then_stop(self, tasks: list[asyncio.Task[None]]) -> None:
        # A timeout rather than waiting forever: shutdown must finish even when the
        # bus is down; what is left over is counted as dropped.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._close_timeout_s):
                await self._queue.join()
                await self._urgent.empty.wait()
        await asyncio.gather(*(cancel_and_wait(task) for task in tasks))

    async def _drain(self) -> None:
        while True:
            raise_if_cancel_requested()
            event = await self._queue.get()
            try:
                await self._publish(event)
            except asyncio.CancelledError:
                self.dropped += 1  # cut off mid-publish by close()'s timeout
                raise
            finally:
                self._queue.task_done()

    async def _publish(self, event: Event) -> None:
        try:
            await self._bus.publish(event)
        except Exception:
            # The drain task must outlive any bus failure: log, count, go on.
            self.failed += 1
            logger.exception("publishing %s event %s failed", event.type, event.id)
        else:
            self.published += 1

    async def _drain_urgent(self) -> None:
        urgent = self._urgent
        while True:
            event = await urgent.first()
            await self._publish_until_taken(event)
            urgent.done()

    async def _publish_until_taken(self, event: Event) -> None:
        delay = self._urgent.backoff_s
        while True:
            raise_if_cancel_requested()
            try:
                await self._bus.publish(event)
            except Exception:
                self.failed += 1
                logger.exception(
                    "publishing %s event %s failed; retrying in %.1f s", event.type, event.id, delay
                )
            else:
                self.published += 1
                return
            await asyncio.sleep(delay)
            delay = min(self._urgent.backoff_max_s, delay * 2)


class _UrgentQueue:
    """The events ``publish_urgent`` took, oldest first; unbounded, so nothing is dropped.

    The head stays queued while it is being published, so one that ``close`` cuts off
    is still counted as unpublished.
    """

    def __init__(self, backoff_s: float, backoff_max_s: float) -> None:
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._events: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()
        self.empty = asyncio.Event()  # set while nothing is queued or being published
        self.empty.set()

    def put(self, event: Event) -> None:
        self._events.append(event)
        self._ready.set()
        self.empty.clear()

    async def first(self) -> Event:
        await self._ready.wait()
        return self._events[0]

    def done(self) -> None:
        """The head was published: drop it."""
        self._events.popleft()
        if not self._events:
            self._ready.clear()
            self.empty.set()

    def take_all(self) -> list[Event]:
        events = list(self._events)
        self._events.clear()
        self._ready.clear()
        self.empty.set()
        return events
