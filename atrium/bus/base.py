"""The ``EventBus`` protocol, the ``Event`` base class and the non-blocking ``EventPublisher``.

Delivery contract shared by every backend:

- Fan-out across groups: every distinct ``group`` subscribed to an event type gets
  every event of that type published after the group was first created.
- Competing consumers within a group: each event goes to one consumer of the group.
- At-least-once: an event is acknowledged only after its handler returns without
  raising; a handler that raises sees the event again. Handlers must be idempotent
  (``Event.id`` is the natural deduplication key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar, Protocol, TypeVar, runtime_checkable
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

logger = logging.getLogger("atrium.bus")


def _new_event_id() -> str:
    return uuid4().hex


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
    ) -> Subscription:
        """Deliver events of ``event_type`` to ``handler`` as ``consumer`` of ``group``.

        The group exists when this returns, so every event published afterwards
        reaches it.
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
    a slow bus. ``failed`` counts events the bus refused; ``published`` those it took.
    The publisher does not own the bus: ``close`` leaves the bus open.
    """

    def __init__(
        self, bus: EventBus, *, max_queue_size: int = 10_000, close_timeout_s: float = 5.0
    ) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_queue_size)
        self._close_timeout_s = close_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0
        self.failed = 0
        self.published = 0

    async def start(self) -> None:
        """Start the background task that drains the queue into the bus."""
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="atrium.bus.publisher")

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

    async def close(self) -> None:
        """Publish what is queued, waiting at most ``close_timeout_s``, then stop."""
        self._closed = True
        if self._task is not None:
            await self._drain_then_stop(self._task)
            self._task = None
        if not self._queue.empty():
            logger.warning("event publisher closed with %d events unpublished", self._queue.qsize())
            self.dropped += self._queue.qsize()

    async def _drain_then_stop(self, task: asyncio.Task[None]) -> None:
        # A timeout rather than waiting forever: shutdown must finish even when the
        # bus is down; what is left over is counted as dropped.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._close_timeout_s)
        await cancel_and_wait(task)

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
