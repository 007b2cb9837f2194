"""``atrium events ...`` against a real server (uvicorn on loopback) on a Redis Streams bus."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import uvicorn
from typer.testing import CliRunner

from atrium.app import build_app, build_platform
from atrium.bus import DeliveryPolicy, RedisStreamsEventBus, RequestCompleted
from atrium.cli import app as cli
from atrium.core.settings import Settings

pytestmark = pytest.mark.integration

ADMIN_KEY = "atr-" + "c" * 40
TIMEOUT_S = 10.0


@dataclass
class Server:
    url: str
    prefix: str

    def run(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, [*args, "--url", self.url, "--api-key", ADMIN_KEY])
        return result.exit_code, result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    prefix = f"atrium-test:{uuid4().hex}:"
    settings = Settings(
        data_dir=tmp_path,
        auth={"bootstrap_key": ADMIN_KEY},  # type: ignore[arg-type]
        models={},
        workflows={"enabled": False},  # type: ignore[arg-type]
        bus={"backend": "redis", "stream_prefix": prefix},  # type: ignore[arg-type]
    )
    app = build_app(settings, build_platform(settings, announce_key=lambda _: None))
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(int(TIMEOUT_S / 0.05)):
        if uv.started:
            break
        threading.Event().wait(0.05)
    assert uv.started
    try:
        yield Server(f"http://127.0.0.1:{port}", prefix)
    finally:
        uv.should_exit = True
        thread.join(TIMEOUT_S)


@pytest_asyncio.fixture
async def redis(server: Server) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    yield client
    keys = [key async for key in client.scan_iter(match=server.prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_streams_dead_letters_retry_delete_and_replay(
    server: Server, redis: aioredis.Redis
) -> None:
    policy = DeliveryPolicy(max_deliveries=2, claim_idle_ms=1000, backoff_s=0.01)
    bus = RedisStreamsEventBus(redis, stream_prefix=server.prefix, block_ms=20, policy=policy)
    broken = True
    handled: list[str] = []

    async def warehouse(event: RequestCompleted) -> None:
        if broken:
            raise RuntimeError("warehouse down")
        handled.append(event.id)

    await bus.subscribe(RequestCompleted, "warehouse", "c1", warehouse)
    events = [
        RequestCompleted(
            model="m", key_id=None, prompt_tokens=n, completion_tokens=n, latency_ms=1.0,
            status=200, stream=False, endpoint="chat.completions",
        )
        for n in range(2)
    ]  # fmt: skip
    for event in events:
        await bus.publish(event)
    async with asyncio.timeout(TIMEOUT_S):
        while len(await bus.dead_letters()) < 2:  # noqa: ASYNC110 - polling Redis
            await asyncio.sleep(0.02)
    broken = False

    code, streams = server.run("events", "streams")
    assert code == 0, streams
    assert "request.completed" in streams
    assert "warehouse" in streams
    code, listed = server.run("events", "dead-letters", "--json")
    assert code == 0, listed
    letters = [json.loads(line) for line in listed.splitlines()]
    reasons = {letter["reason"] for letter in letters}
    assert reasons == {"handler failed: RuntimeError: warehouse down"}
    by_event = {json.loads(letter["data"])["id"]: letter["id"] for letter in letters}

    assert server.run("events", "retry", by_event[events[0].id])[0] == 0
    assert server.run("events", "delete", by_event[events[1].id])[0] == 0
    code, missing = server.run("events", "delete", by_event[events[1].id])
    assert code == 1
    assert "404" in missing
    async with asyncio.timeout(TIMEOUT_S):
        while not handled:  # noqa: ASYNC110 - the retried entry reaches the consumer
            await asyncio.sleep(0.02)
    assert handled == [events[0].id]
    assert await bus.dead_letters() == []

    code, replayed = server.run("events", "replay", "request.completed", "late", "--from", "0")
    assert code == 0, replayed
    groups = await redis.xinfo_groups(bus.stream_name("request.completed"))
    late = [g for g in groups if g["name"] in (b"late", "late")]
    assert late
    assert late[0]["lag"] == 3  # two events and the retried copy, all still to deliver
    code, refused = server.run("events", "replay", "request.completed", "late")
    assert code == 1
    assert "from_id" in refused
    await bus.close()
