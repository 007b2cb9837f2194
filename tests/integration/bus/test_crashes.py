"""Faults a consumer or Redis really has: a consumer process killed mid-message, and
a Redis server restarted during a publish burst."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from atrium.bus import RedisStreamsEventBus, RequestCompleted
from atrium.bus.dedup import IdempotentHandler
from atrium.bus.redis_streams import DeliveryPolicy
from tests.integration._delivery import (
    CLAIM_IDLE_MS,
    TIMEOUT_S,
    first_line,
    python_process,
    sigkill,
    until,
)

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


def completed(n: int) -> RequestCompleted:
    return RequestCompleted(
        model="smollm2",
        key_id=f"key-{n}",
        prompt_tokens=n,
        completion_tokens=n,
        latency_ms=1.0,
        status=200,
        stream=False,
        endpoint="chat.completions",
    )


async def test_consumer_killed_mid_message_has_it_handled_once_by_another(
    shared_redis: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = shared_redis
    with python_process(HERE / "_consumer_process.py", prefix, str(CLAIM_IDLE_MS)) as doomed:
        assert await first_line(doomed) == "ready"
        policy = DeliveryPolicy(claim_idle_ms=CLAIM_IDLE_MS, backoff_s=0.01, backoff_max_s=0.05)
        bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20, policy=policy)
        sent = [completed(n) for n in range(3)]
        for event in sent:
            await bus.publish(event)
        started = await redis.blpop([prefix + "started"], timeout=TIMEOUT_S)
        assert started is not None
        assert started[1].decode() == sent[0].id  # the doomed consumer is mid-message

        await sigkill(doomed)

        handled: list[str] = []
        done = asyncio.Event()

        async def work(event: RequestCompleted) -> None:
            handled.append(event.id)
            if len(handled) == len(sent):
                done.set()

        survivor = IdempotentHandler(
            redis, work, scope="work", prefix=prefix + "seen:", lease_ms=CLAIM_IDLE_MS
        )
        await bus.subscribe(RequestCompleted, "work", "survivor", survivor)
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
        await asyncio.sleep(3 * CLAIM_IDLE_MS / 1000)  # any duplicate would have come by now
        await bus.close()

    assert sorted(handled) == sorted(event.id for event in sent)
    assert len(handled) == len(set(handled))
    summary = await redis.xpending(bus.stream_name(RequestCompleted.type), "work")
    assert summary["pending"] == 0
    assert await bus.dead_letters() == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server with an append-only file, to stop and start at will."""

    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self._dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self._dir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)  # a clean shutdown, as on a restart
            self._process.wait(TIMEOUT_S)
        self._process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def _wait_up(client: aioredis.Redis) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            try:
                await client.ping()
            except aioredis.ConnectionError:
                await asyncio.sleep(0.02)
            else:
                return


async def test_redis_restart_during_a_publish_burst_loses_no_event(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    await _wait_up(client)
    policy = DeliveryPolicy(
        claim_idle_ms=1000, backoff_s=0.01, backoff_max_s=0.05,
        publish_attempts=40, publish_backoff_s=0.02, publish_backoff_max_s=0.1,
    )  # fmt: skip
    bus = RedisStreamsEventBus(client, block_ms=20, retry_delay_s=0.02, policy=policy)
    received: set[str] = set()

    async def handle(event: RequestCompleted) -> None:
        received.add(event.id)

    sent = [completed(n) for n in range(400)]
    restart: asyncio.TimerHandle | None = None
    try:
        await bus.subscribe(RequestCompleted, "audit", "c1", handle)
        for n, event in enumerate(sent):
            if n == 200:
                await asyncio.to_thread(redis_server.stop)
                restart = asyncio.get_running_loop().call_later(0.3, redis_server.start)
            await bus.publish(event)  # waits out the restart

        async def all_received() -> bool:
            return len(received) >= len(sent)

        await until(all_received)
    finally:
        if restart is not None:
            restart.cancel()
        await bus.close()
        await client.aclose()

    assert received == {event.id for event in sent}
