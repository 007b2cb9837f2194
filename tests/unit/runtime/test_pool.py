from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from atrium.core.errors import OverloadedError
from atrium.runtime.pool import WorkerPool


class Instance:
    def __init__(self, name: str) -> None:
        self.name = name
        self.busy = False

    def work(self, gate: threading.Event) -> str:
        assert not self.busy, "an instance ran two calls at once"
        self.busy = True
        try:
            gate.wait(timeout=10)
            return self.name
        finally:
            self.busy = False


async def _wait_until(predicate: Callable[[], bool]) -> None:
    """Poll state that worker threads change (there is no event to wait on), with a deadline."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_calls_beyond_workers_and_queue_fail_fast_with_503() -> None:
    pool = WorkerPool("m", [Instance("a")], queue_limit=1)
    gate = threading.Event()
    running = asyncio.create_task(pool.run(lambda i: i.work(gate)))
    queued = asyncio.create_task(pool.run(lambda i: i.work(gate)))
    await _wait_until(lambda: pool.in_flight == 2)
    with pytest.raises(OverloadedError) as refused:
        await pool.run(lambda i: i.work(gate))
    assert refused.value.status == 503
    assert refused.value.headers == {"retry-after": "1"}
    gate.set()
    assert await running == "a"
    assert await queued == "a"
    assert pool.in_flight == 0
    pool.close()


async def test_each_instance_runs_one_call_at_a_time() -> None:
    pool = WorkerPool("m", [Instance("a"), Instance("b")], queue_limit=10)
    gate = threading.Event()
    gate.set()
    names = await asyncio.gather(*(pool.run(lambda i: i.work(gate)) for _ in range(12)))
    assert set(names) <= {"a", "b"}
    assert len(names) == 12
    pool.close()


async def test_a_cancelled_caller_does_not_free_a_busy_instance() -> None:
    instance = Instance("a")
    pool = WorkerPool("m", [instance], queue_limit=5)
    gate = threading.Event()
    first = asyncio.create_task(pool.run(lambda i: i.work(gate)))
    await _wait_until(lambda: instance.busy)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The thread still holds the instance: a second call must wait for it, not share it
    # (sharing would trip the assertion in Instance.work).
    open_gate = threading.Event()
    open_gate.set()
    second = asyncio.create_task(pool.run(lambda i: i.work(open_gate)))
    await asyncio.sleep(0.05)
    assert not second.done()
    gate.set()
    assert await second == "a"
    pool.close()


async def test_stream_yields_in_order_and_stops_the_thread_when_the_consumer_leaves() -> None:
    pool: WorkerPool[Instance] = WorkerPool("m", [Instance("a")], queue_limit=0)
    produced: list[int] = []
    stopped = threading.Event()

    def numbers(_: Instance, stop: threading.Event) -> Iterator[int]:
        for n in range(10_000):
            if stop.wait(0.001):
                stopped.set()
                return
            produced.append(n)
            yield n

    got = []
    # A consumer that leaves closes the stream (as the backends do): deterministic, not
    # left to when the garbage collector finalises the generator.
    async with contextlib.aclosing(pool.stream(numbers)) as stream:
        async for n in stream:
            got.append(n)
            if n == 4:
                break
    assert got == [0, 1, 2, 3, 4]
    await asyncio.to_thread(stopped.wait, 5)
    assert stopped.is_set()
    await _wait_until(lambda: pool.in_flight == 0)
    assert len(produced) < 10_000
    # The instance is back: the next stream runs.
    assert [n async for n in pool.stream(lambda _, __: iter([7]))] == [7]
    pool.close()


async def test_stream_errors_reach_the_consumer() -> None:
    pool: WorkerPool[Instance] = WorkerPool("m", [Instance("a")], queue_limit=0)

    def broken(_: Instance, __: threading.Event) -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    got: list[int] = []

    async def consume(items: AsyncIterator[int]) -> None:
        async for n in items:
            got.append(n)

    with pytest.raises(ValueError, match="boom"):
        await consume(pool.stream(broken))
    assert got == [1]
    await _wait_until(lambda: pool.in_flight == 0)
    pool.close()


async def test_streamed_items_come_in_batches_after_the_first() -> None:
    pool: WorkerPool[Instance] = WorkerPool("m", [Instance("a")], 0, stream_interval=3600)
    first_seen = threading.Event()
    release = threading.Event()

    def numbers(_: Instance, __: threading.Event) -> Iterator[int]:
        yield 1
        assert first_seen.wait(5), "the first item was held back"
        yield from (2, 3, 4)
        assert release.wait(5)

    items = aiter(pool.stream(numbers))
    assert await anext(items) == 1
    first_seen.set()
    # Within the interval the rest wait for the end of the stream, in one batch.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(pending := asyncio.ensure_future(anext(items))), 0.2)
    release.set()
    assert await pending == 2
    assert [n async for n in items] == [3, 4]
    pool.close()
