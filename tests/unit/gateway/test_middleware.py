"""The pure ASGI middleware, driven through httpx's ASGITransport."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from atrium.api.errors import install_error_handlers
from atrium.gateway.middleware import EdgeMiddleware, current_trace_id


def _app(max_bytes: int) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("a bug")

    @app.post("/echo")
    @app.post("/upload/{name}")
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(str(len(body)))

    uploads = (re.compile(r"/upload/.+"), max_bytes * 4)
    app.add_middleware(EdgeMiddleware, max_bytes=max_bytes, overrides=[uploads])
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


async def test_a_path_override_has_its_own_limit_declared_or_counted() -> None:
    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"x" * 1000

    async with _client() as client:
        declared = await client.post("/upload/a", content=b"x" * 8192)
        too_long = await client.post("/upload/a", content=b"x" * 8193)
        chunked = await client.post("/upload/a", content=chunks(8))
        chunked_over = await client.post("/upload/a", content=chunks(9))
    assert (declared.status_code, declared.text) == (200, "8192")
    assert too_long.status_code == 413
    assert (chunked.status_code, chunked.text) == (200, "8000")
    assert chunked_over.status_code == 413
    assert "larger than 8192 bytes" in chunked_over.json()["error"]["message"]


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
    ids = {r.headers["x-request-id"] for r in (generated, replaced, refused)}
    assert len(ids) == 3  # every generated id is new


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


async def test_with_trace_ids_every_answer_names_a_trace_the_callers_if_it_sent_one() -> None:
    app = FastAPI()

    @app.get("/seen")
    async def seen() -> Response:
        return Response(current_trace_id.get() or "")

    app.add_middleware(EdgeMiddleware, max_bytes=1024, trace_ids=True)
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        first, second = await c.get("/seen"), await c.get("/seen")
        continued = await c.get(
            "/seen", headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-01"}
        )
        bad = await c.get("/seen", headers={"traceparent": "00-xyz-00f067aa0ba902b7-01"})
        missing = await c.get("/nowhere")
    named = [r.headers["x-atrium-trace-id"] for r in (first, second, continued, bad, missing)]
    assert [r.text for r in (first, second, continued, bad)] == named[:4]  # the log lines' id
    assert named[2] == caller
    assert all(re.fullmatch(r"[0-9a-f]{32}", n) and int(n, 16) for n in named)
    assert len(set(named)) == 5


async def test_without_trace_ids_no_trace_is_named() -> None:
    async with _client() as client:
        response = await client.get("/boom")
    assert "x-atrium-trace-id" not in response.headers
