"""``InProcessEventBus``: the embedded event bus, asyncio queues inside one process.

Each consumer group of an event type has one bounded queue; publishing puts the
event on every group's queue (fan-out) and the group's consumers take from that
queue in turn (competing consumers). Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Generic

from atrium.bus.base import E, Event, Subscription, TaskSubscription, event_type_name

logger = logging.getLogger("atrium.bus")


class InProcessEventBus:
    """An ``EventBus`` for a single process, with the same group semantics as Redis.

    A handler that raises is retried in place up to ``max_attempts`` times, waiting
    ``retry_backoff_s`` and then twice as long after each failure, and then the event
    is dropped with an error log: with no stream to keep it in, retrying forever
    would stall the group. A group's queue holds at most ``max_queue_size`` events;
    beyond that new events for the group are dropped with a warning, as a bounded
    Redis stream trims old ones.
    """

    def __init__(
        self,
        *,
        max_queue_size: int = 100_000,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.05,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._max_queue_size = max_queue_size
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s
        # topic -> group -> the group's queue; groups outlive their consumers, as in Redis.
        self._groups: dict[str, dict[str, asyncio.Queue[Event]]] = {}
        self._subscriptions: set[TaskSubscription] = set()
        self._ids = itertools.count(1)

    async def start(self) -> None:
        """Nothing to acquire; present for the protocol."""

    async def close(self) -> None:
        """Stop every subscription; events still queued are discarded."""
        # Concurrently, so shutdown takes as long as the slowest stop, not the sum.
        await asyncio.gather(*(sub.stop() for sub in list(self._subscriptions)))
        self._groups.clear()

    async def publish(self, event: Event) -> str:
        """Queue ``event`` for every group of its type; returns a per-bus sequence number."""
        message_id = str(next(self._ids))
        for group, queue in self._groups.get(event.type, {}).items():
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                logger.warning("group %r is full; dropped %s event %s", group, event.type, event.id)
        return message_id

    async def subscribe(
        self,
        event_type: type[E],
        group: str,
        consumer: str,
        handler: Callable[[E], Awaitable[None]],
    ) -> Subscription:
        """Start ``consumer`` of ``group``; see ``EventBus.subscribe``."""
        queue = self._group_queue(event_type_name(event_type), group)
        worker = _Consumer(queue, event_type, handler, self._max_attempts, self._retry_backoff_s)
        task = asyncio.create_task(worker.run(), name=f"atrium.bus.{group}.{consumer}")
        subscription = TaskSubscription(task, self._subscriptions.discard)
        self._subscriptions.add(subscription)
        return subscription

    def _group_queue(self, topic: str, group: str) -> asyncio.Queue[Event]:
        groups = self._groups.setdefault(topic, {})
        if group not in groups:
            groups[group] = asyncio.Queue(maxsize=self._max_queue_size)
        return groups[group]


class _Consumer(Generic[E]):
    """One consumer: takes events off its group's queue and hands them to the handler."""

    def __init__(
        self,
        queue: asyncio.Queue[Event],
        event_type: type[E],
        handler: Callable[[E], Awaitable[None]],
        max_attempts: int,
        retry_backoff_s: float,
    ) -> None:
        self._queue = queue
        self._event_type = event_type
        self._handler = handler
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
            except asyncio.CancelledError:
                # Stopped mid-delivery: the event was not acked, so give it back to
                # the group, where another consumer (or a later one) takes it.
                self._give_back(event)
                raise
            finally:
                self._queue.task_done()

    def _give_back(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            logger.warning("group is full; dropped %s event %s on stop", event.type, event.id)

    async def _deliver(self, event: Event) -> None:
        if not isinstance(event, self._event_type):
            logger.error("dropped %s event %s of unexpected class", event.type, event.id)
            return
        for attempt in range(1, self._max_attempts + 1):
            if await self._attempt(event, attempt):
                return
            if attempt < self._max_attempts:
                await asyncio.sleep(self._retry_backoff_s * 2 ** (attempt - 1))
        logger.error(
            "dropped %s event %s after %d failed attempts",
            event.type,
            event.id,
            self._max_attempts,
        )

    async def _attempt(self, event: E, attempt: int) -> bool:
        try:
            await self._handler(event)
        except Exception:
            logger.exception(
                "handler failed on %s event %s (attempt %d)", event.type, event.id, attempt
            )
            return False
        return True
