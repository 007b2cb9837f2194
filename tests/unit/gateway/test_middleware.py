"""The pure ASGI middleware, driven through httpx's ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from atrium.api.errors import install_error_handlers
from atrium.gateway.middleware import (
    BodySizeLimitMiddleware,
    RequestIdMiddleware,
    UnhandledErrorMiddleware,
)


def _app(max_bytes: int) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("a bug")

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(str(len(body)))

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_bytes)
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def _client(max_bytes: int = 2048) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(_app(max_bytes)), base_url="http://t")


async def test_bodies_within_the_limit_pass() -> None:
    async with _client() as client:
        response = await client.post("/echo", content=b"x" * 2048)
    assert response.status_code == 200
    assert response.text == "2048"


async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async with _client() as client:
        response = await client.post("/echo", content=b"x" * 2049)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_chunked_bodies_are_counted_while_reading() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 1000

    async with _client() as client:
        response = await client.post("/echo", content=chunks())
    assert response.status_code == 413
    assert "larger than 2048 bytes" in response.json()["error"]["message"]


async def test_every_response_carries_a_request_id_and_sane_ones_are_kept() -> None:
    async with _client() as client:
        generated = await client.post("/echo", content=b"")
        kept = await client.post("/echo", content=b"", headers={"x-request-id": "abc-123"})
        replaced = await client.post("/echo", content=b"", headers={"x-request-id": "x" * 500})
        refused = await client.post("/echo", content=b"x" * 5000)
    assert len(generated.headers["x-request-id"]) == 24
    assert kept.headers["x-request-id"] == "abc-123"
    assert len(replaced.headers["x-request-id"]) == 24
    assert refused.headers["x-request-id"]


async def test_a_bug_is_a_500_in_shape_with_the_request_id_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _client() as client:
        broken = await client.get("/boom", headers={"x-request-id": "req-42"})
        after = await client.post("/echo", content=b"ok")
    assert broken.status_code == 500
    assert broken.headers["x-request-id"] == "req-42"
    assert broken.json()["error"]["type"] == "server_error"
    assert "req-42" in broken.json()["error"]["message"]
    assert "a bug" not in broken.text  # internals stay in the log
    assert any("req-42" in r.getMessage() for r in caplog.records)
    assert after.status_code == 200
