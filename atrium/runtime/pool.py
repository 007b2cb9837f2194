"""A bounded pool of model instances that run blocking generation off the event loop."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from atrium.core.errors import OverloadedError

M = TypeVar("M")
T = TypeVar("T")

_DONE = object()


class WorkerPool(Generic[M]):
    """Runs calls on a fixed set of instances, one call per instance at a time.

    At most ``len(instances) + queue_limit`` calls are admitted; beyond that a call
    fails at once with :class:`OverloadedError` (503 with ``Retry-After``) instead of
    waiting without bound.
    """

    def __init__(
        self, name: str, instances: list[M], queue_limit: int, *, stream_interval: float = 0.0
    ) -> None:
        self._name = name
        self._stream_interval = stream_interval
        self._capacity = len(instances) + queue_limit
        self._idle: asyncio.Queue[M] = asyncio.Queue()
        for instance in instances:
            self._idle.put_nowait(instance)
        self._admitted = 0
        self._executor = ThreadPoolExecutor(
            max_workers=len(instances), thread_name_prefix=f"atrium-{name}"
        )

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet finished (running plus queued)."""
        return self._admitted

    def close(self) -> None:
        """Stop the threads once running calls finish."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _admit(self) -> None:
        if self._admitted >= self._capacity:
            msg = (
                f"model {self._name!r} is at capacity ({self._capacity} requests running "
                "or queued); retry shortly"
            )
            raise OverloadedError(msg, headers={"retry-after": "1"})
        self._admitted += 1

    async def run(self, call: Callable[[M], T]) -> T:
        """Run ``call`` on a free instance in a worker thread."""
        self._admit()
        instance: M | None = None
        worker: asyncio.Future[T] | None = None
        try:
            instance = await self._idle.get()
            worker = asyncio.get_running_loop().run_in_executor(self._executor, call, instance)
            # Shielded: a cancelled caller must not free an instance a thread still uses.
            return await asyncio.shield(worker)
        finally:
            self._release(instance, worker)

    async def stream(
        self, call: Callable[[M, threading.Event], Iterator[T]]
    ) -> AsyncGenerator[T, None]:
        """Iterate ``call``'s items as a worker thread produces them.

        Items reach the event loop in batches at most every ``stream_interval`` seconds
        (the first one at once): each hand-over wakes the loop, and on a machine whose
        cores all run the model, every wake-up stalls generation.

        When the consumer stops early (a client went away), the thread is told to stop
        through the event it was given, and the instance returns to the pool only once
        the thread has let go of it.
        """
        self._admit()
        loop = asyncio.get_running_loop()
        handoff = _Handoff(loop, self._stream_interval)
        stop = threading.Event()
        instance: M | None = None
        worker: asyncio.Future[None] | None = None
        try:
            instance = await self._idle.get()
            worker = loop.run_in_executor(self._executor, _produce, call, instance, stop, handoff)
            while True:
                for item in await handoff.batches.get():
                    if item is _DONE:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item  # type: ignore[misc]
        finally:
            stop.set()
            self._release(instance, worker)

    def _release(self, instance: M | None, worker: asyncio.Future[Any] | None) -> None:
        def give_back(_: object = None) -> None:
            self._admitted -= 1
            if instance is not None:
                self._idle.put_nowait(instance)

        if worker is None or worker.done():
            give_back()
        else:
            worker.add_done_callback(give_back)


class _Handoff:
    """Carries items from a worker thread to the event loop in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.batches: asyncio.Queue[list[object]] = asyncio.Queue()
        self._loop = loop
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: list[object] = []
        self._scheduled = False
        self._last = -math.inf

    def add(self, item: object, *, final: bool = False) -> None:
        """Thread side: queue an item; wake the loop when a batch is due."""
        with self._lock:
            self._pending.append(item)
            due = final or time.monotonic() - self._last >= self._interval
            if due and not self._scheduled:
                self._scheduled = True
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
            self._last = time.monotonic()
        self.batches.put_nowait(batch)


def _produce(
    call: Callable[[M, threading.Event], Iterator[T]],
    instance: M,
    stop: threading.Event,
    handoff: _Handoff,
) -> None:
    """Thread side of :meth:`WorkerPool.stream`."""
    try:
        for item in call(instance, stop):
            handoff.add(item)
            if stop.is_set():
                break
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
        handoff.add(exc)
    handoff.add(_DONE, final=True)
