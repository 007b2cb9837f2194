"""The crash-test harness shared by the consumers that write what they receive (audit, usage).

A consumer process receives events on a Redis Streams group while the test holds a database
lock that keeps its commit waiting; the test kills it with the events unacknowledged, and a
surviving consumer in the test takes them over once ``CLAIM_IDLE_MS`` has passed. The bus's
own tests use its polling and its process handling too.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from atrium.bus import RedisStreamsEventBus, RequestCompleted
from atrium.bus.redis_streams import DeliveryPolicy

TIMEOUT_S = 10.0
CLAIM_IDLE_MS = 300


async def until(check: Callable[[], Awaitable[bool]], seconds: float = TIMEOUT_S) -> None:
    """Return once ``check`` holds; fail after ``seconds``."""
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


@contextmanager
def python_process(script: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """The Python ``script`` running with ``args``, its stdout piped as text; killed and
    reaped afterwards if it still runs."""
    process = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def first_line(process: subprocess.Popen[str], seconds: float = TIMEOUT_S) -> str:
    """The next line ``process`` writes (its announcement); fail after ``seconds``."""
    assert process.stdout is not None
    return (await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), seconds)).strip()


async def sigkill(process: subprocess.Popen[str], seconds: float = TIMEOUT_S) -> None:
    """Kill ``process`` with no chance to clean up, and check that it died of it."""
    process.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(process.wait, seconds) == -signal.SIGKILL


async def drained(redis: aioredis.Redis, stream: str) -> bool:
    """Whether the stream's one group has been delivered every entry and acknowledged each."""
    info = (await redis.xinfo_groups(stream))[0]
    return not info["pending"] and not info["lag"]


async def settle(check: Callable[[], Awaitable[bool]]) -> None:
    """Return once ``check`` holds and a duplicate delivery would have come since."""
    await until(check)
    await asyncio.sleep(3 * CLAIM_IDLE_MS / 1000)


@dataclass(frozen=True)
class CrashGroup:
    """A consumer group on the ``request.completed`` stream of a bus whose consumers claim
    what a dead one left unacknowledged after ``CLAIM_IDLE_MS`` (the consumer processes'
    settings)."""

    redis: aioredis.Redis
    prefix: str
    bus: RedisStreamsEventBus
    stream: str
    group: str

    @classmethod
    async def publish(
        cls, redis: aioredis.Redis, prefix: str, group: str, events: Sequence[RequestCompleted]
    ) -> CrashGroup:
        """Create ``group`` at the start of the stream under ``prefix`` and publish ``events``."""
        policy = DeliveryPolicy(claim_idle_ms=CLAIM_IDLE_MS, backoff_s=0.01, backoff_max_s=0.05)
        bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20, policy=policy)
        stream = bus.stream_name(RequestCompleted.type)
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
        for event in events:
            await bus.publish(event)
        return cls(redis, prefix, bus, stream, group)

    async def pending(self, count: int) -> bool:
        """Whether the group has ``count`` entries delivered and not acknowledged."""
        summary = await self.redis.xpending(self.stream, self.group)
        return int(summary["pending"]) == count

    async def kill_consumer(self, script: Path, database_url: str, count: int) -> None:
        """Start the consumer process ``script``, wait until it holds ``count`` entries
        unacknowledged (the caller's lock keeps its commit waiting), and SIGKILL it."""
        with python_process(script, database_url, self.prefix, str(CLAIM_IDLE_MS)) as consumer:
            assert await first_line(consumer) == "ready"
            await until(lambda: self.pending(count))
            await asyncio.sleep(0.2)  # the handlers wait on the commit, the events unacked
            assert (await self.redis.xpending(self.stream, self.group))["pending"] == count
            await sigkill(consumer)
