"""Routes over real OpenAI-compatible upstreams on loopback, through the whole gateway."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute
from starlette.types import Message, Receive, Scope, Send

from atrium.app import Platform, build_app, build_platform
from atrium.core.settings import BusSettings, Settings, StoreSettings, WorkflowSettings

pytestmark = pytest.mark.integration

KEY = "atr-" + "r" * 40


@dataclass
class Upstream:
    """A small OpenAI-compatible server that answers with its name, or fails on demand."""

    name: str
    port: int = 0
    fail_with: int | None = None
    calls: int = 0
    server: uvicorn.Server | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            self.calls += 1
            body = await request.json()
            if self.fail_with is not None:
                error = {"message": "scripted failure", "type": "server_error"}
                return JSONResponse({"error": error}, status_code=self.fail_with)
            if body.get("stream"):  # the whole stream in one write, as a fast upstream sends it
                return Response(_SSE_ANSWER, media_type="text/event-stream")
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self.name},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                }
            )

        async def models(_: Request) -> Response:
            return JSONResponse({"object": "list", "data": []})

        return Starlette(
            routes=[
                HttpRoute("/v1/chat/completions", chat, methods=["POST"]),
                HttpRoute("/v1/models", models),
            ]
        )


def _sse_chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "choices": [choice]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


_SSE_ANSWER = (
    _sse_chunk({"role": "assistant", "content": ""})
    + _sse_chunk({"content": "Hello"})
    + _sse_chunk({}, "stop")
    + b"data: [DONE]\n\n"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {name: Upstream(name) for name in ("a", "b", "c", "spare")}
    threads = []
    for upstream in servers.values():
        upstream.port = _free_port()
        config = uvicorn.Config(
            upstream.app(), host="127.0.0.1", port=upstream.port, log_level="warning"
        )
        upstream.server = uvicorn.Server(config)
        thread = threading.Thread(target=upstream.server.run, daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + 20
    while not all(u.server and u.server.started for u in servers.values()):
        assert time.monotonic() < deadline, "upstreams did not start"
        time.sleep(0.02)
    yield servers
    for upstream in servers.values():
        assert upstream.server is not None
        upstream.server.should_exit = True
    for thread in threads:
        thread.join(timeout=10)


def _settings(tmp_path: Path, upstreams: dict[str, Upstream]) -> Settings:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    return Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": KEY},
            "models": {
                "model-a": {"backend": "openai_compat", "base_url": upstreams["a"].base_url},
                "model-b": {"backend": "openai_compat", "base_url": upstreams["b"].base_url},
                "spare": {"backend": "openai_compat", "base_url": upstreams["spare"].base_url},
                "pair": {
                    "backend": "openai_compat",
                    "base_url": upstreams["c"].base_url,
                    "replicas": [dead],
                    "breaker": {"failures": 1, "cooldown_seconds": 60},
                    "health_check_seconds": 0,
                },
                "broken": {"backend": "openai_compat", "base_url": dead},
            },
            "routes": {
                "split": {
                    "targets": [
                        {"model": "model-a", "weight": 80},
                        {"model": "model-b", "weight": 20},
                    ],
                    "sticky": "none",
                },
                "resilient": {
                    "targets": [{"model": "broken"}],
                    "fallbacks": ["spare"],
                    "retries": 1,
                    "backoff_ms": 1,
                },
            },
        }
    )


@pytest_asyncio.fixture
async def gateway(
    tmp_path: Path, upstreams: dict[str, Upstream]
) -> AsyncIterator[tuple[httpx.AsyncClient, Platform]]:
    settings = _settings(tmp_path, upstreams)
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    headers = {"authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium", headers=headers
        ) as client:
            yield client, platform
    finally:
        await platform.close()


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_an_80_20_split_over_1000_requests(
    gateway: tuple[httpx.AsyncClient, Platform],
) -> None:
    client, _ = gateway
    served: Counter[str] = Counter()
    for _ in range(10):
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=_chat("split")) for _ in range(100))
        )
        for answer in answers:
            assert answer.status_code == 200
            served[answer.json()["choices"][0]["message"]["content"]] += 1
            assert answer.headers["x-atrium-served-by"].startswith("model-")
    assert 737 <= served["a"] <= 863  # Binomial(1000, 0.8) within five sd
    assert served["a"] + served["b"] == 1000


async def test_a_dead_target_falls_back_and_is_counted(
    gateway: tuple[httpx.AsyncClient, Platform],
) -> None:
    client, _ = gateway
    answer = await client.post("/v1/chat/completions", json=_chat("resilient"))
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "spare"
    assert answer.headers["x-atrium-served-by"].startswith("spare@")
    metrics = (await client.get("/metrics")).text
    assert 'atrium_route_retries_total{route="resilient",target="broken"} 1.0' in metrics
    assert (
        'atrium_route_fallbacks_total{failed="broken",route="resilient",to="spare"} 1.0' in metrics
    )


async def test_an_upstream_5xx_without_a_route_is_a_502(
    gateway: tuple[httpx.AsyncClient, Platform], upstreams: dict[str, Upstream]
) -> None:
    client, _ = gateway
    upstreams["a"].fail_with = 503
    try:
        answer = await client.post("/v1/chat/completions", json=_chat("model-a"))
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "upstream_error"
    finally:
        upstreams["a"].fail_with = None


async def test_a_dead_replica_is_cooled_down_and_the_live_one_serves(
    gateway: tuple[httpx.AsyncClient, Platform], upstreams: dict[str, Upstream]
) -> None:
    client, _ = gateway
    statuses = Counter()
    for _ in range(20):
        answer = await client.post("/v1/chat/completions", json=_chat("pair"))
        statuses[answer.status_code] += 1
    # At most one request can land on the dead replica before its breaker opens.
    assert statuses[200] >= 19
    assert statuses[200] + statuses[502] == 20
    metrics = (await client.get("/metrics")).text
    assert "atrium_replica_cooldowns_total" in metrics
    ready = (await client.get("/readyz")).json()
    assert ready["models"]["pair"]["detail"] == "1/2 replicas available"


@pytest_asyncio.fixture
async def replicas(
    tmp_path: Path, upstreams: dict[str, Upstream], empty_postgres_url: str
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two gateway replicas sharing PostgreSQL and a Redis event bus."""
    prefix = f"atrium-test-routes-{secrets.token_hex(4)}:"
    platforms, clients = [], []
    for i in range(2):
        settings = _settings(tmp_path / f"r{i}", upstreams).model_copy(
            update={
                "store": StoreSettings(url=empty_postgres_url),
                "bus": BusSettings(backend="redis", stream_prefix=prefix),
                # Two platforms in one process: DBOS (the workflow engine) is one per
                # process, and these replicas only serve the gateway.
                "workflows": WorkflowSettings(enabled=False),
            }
        )
        platform = build_platform(settings, announce_key=lambda _: None)
        app = build_app(settings, platform)
        await platform.start()
        platforms.append(platform)
        clients.append(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app),
                base_url="http://atrium",
                headers={"authorization": f"Bearer {KEY}"},
            )
        )
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()
        for platform in platforms:
            await platform.close()
        cleanup = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = [k async for k in cleanup.scan_iter(match=f"{prefix}*")]
        if keys:
            await cleanup.delete(*keys)
        await cleanup.aclose()


async def _served(client: httpx.AsyncClient, model: str) -> int | str:
    answer = await client.post("/v1/chat/completions", json=_chat(model))
    if answer.status_code != 200:
        return answer.status_code
    content: str = answer.json()["choices"][0]["message"]["content"]
    return content


async def test_a_route_set_on_one_replica_is_served_by_the_other(
    replicas: list[httpx.AsyncClient],
) -> None:
    first, second = replicas
    spec = {"targets": [{"model": "model-b"}], "aliases": ["live-alias"]}
    put = await first.put("/v1/admin/routes/live", json=spec)
    assert put.status_code == 200, put.text
    assert await _served(first, "live") == "b"
    async with asyncio.timeout(10):
        while await _served(second, "live-alias") != "b":  # noqa: ASYNC110 - another replica
            await asyncio.sleep(0.05)
    moved = {"targets": [{"model": "model-a"}]}
    assert (await second.put("/v1/admin/routes/live", json=moved)).status_code == 200
    async with asyncio.timeout(10):
        while await _served(first, "live") != "a":  # noqa: ASYNC110 - another replica
            await asyncio.sleep(0.05)
    assert await _served(first, "live-alias") == 404  # the new spec has no alias
    listed = (await first.get("/v1/admin/routes")).json()["data"]
    assert [r["name"] for r in listed] == ["live"]
    assert (await first.delete("/v1/admin/routes/live")).status_code == 200
    async with asyncio.timeout(10):
        while await _served(second, "live") != 404:  # noqa: ASYNC110 - another replica
            await asyncio.sleep(0.05)
    assert (await first.delete("/v1/admin/routes/live")).status_code == 404


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ({"targets": []}, "targets"),
        ({"targets": [{"model": "nope"}]}, "targets"),
        ({"targets": [{"model": "model-a", "weight": -1}]}, "targets.0.weight"),
        ({"targets": [{"model": "model-a"}], "fallbacks": ["ghost"]}, "fallbacks"),
        ({"targets": [{"model": "model-a"}], "retries": 99}, "retries"),
        ({"targets": [{"model": "model-a"}], "colour": "red"}, "colour"),
    ],
)
async def test_bad_route_configuration_is_refused_naming_the_field(
    gateway: tuple[httpx.AsyncClient, Platform], spec: dict[str, object], param: str
) -> None:
    client, _ = gateway
    answer = await client.put("/v1/admin/routes/bad", json=spec)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert (await client.get("/v1/admin/routes")).json()["data"] == []


async def test_a_route_cannot_take_a_models_name(
    gateway: tuple[httpx.AsyncClient, Platform],
) -> None:
    client, _ = gateway
    answer = await client.put("/v1/admin/routes/model-a", json={"targets": [{"model": "spare"}]})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "name"


async def test_a_stream_the_upstream_sent_in_one_read_goes_out_in_one_write(
    tmp_path: Path, upstreams: dict[str, Upstream]
) -> None:
    settings = _settings(tmp_path, upstreams)
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    writes: list[bytes] = []

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                writes.append(message["body"])
            await send(message)

        await app(scope, receive, send_counted)

    await platform.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(counted), base_url="http://atrium"
        ) as client:
            answer = await client.post(
                "/v1/chat/completions",
                json={**_chat("model-a"), "stream": True},
                headers={"authorization": f"Bearer {KEY}"},
            )
    finally:
        await platform.close()
    assert answer.status_code == 200, answer.text
    assert answer.content.count(b"data: ") == 4
    assert answer.content.endswith(b"data: [DONE]\n\n")
    assert b"Hello" in answer.content
    assert len(writes) == 1  # three events and [DONE], one write
