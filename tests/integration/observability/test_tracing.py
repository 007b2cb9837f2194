"""Tracing through the whole gateway to a real OpenAI-compatible upstream on loopback."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from atrium.app import Platform, build_app, build_platform
from atrium.core.settings import Settings
from atrium.observability.logging import RequestLineFormatter, TraceContextFilter
from atrium.observability.tracing import Tracing

pytestmark = pytest.mark.integration

KEY = "atr-" + "t" * 40
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Upstream:
    """An OpenAI-compatible server that keeps the traceparent of every call."""

    port: int = 0
    traceparents: list[str | None] = field(default_factory=list)
    server: uvicorn.Server | None = None

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            self.traceparents.append(request.headers.get("traceparent"))
            body = await request.json()
            if body.get("stream"):
                return StreamingResponse(_chunks(body["model"]), media_type="text/event-stream")
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hello"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
                }
            )

        async def models(_: Request) -> Response:
            return JSONResponse({"object": "list", "data": []})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/models", models),
            ]
        )


async def _chunks(model: str) -> AsyncIterator[bytes]:
    for text in ("hel", "lo"):
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                 "model": model, "choices": [{"index": 0, "delta": {"content": text},
                 "finish_reason": None}]}  # fmt: skip
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    served = Upstream()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        served.port = sock.getsockname()[1]
    config = uvicorn.Config(served.app(), host="127.0.0.1", port=served.port, log_level="warning")
    served.server = uvicorn.Server(config)
    thread = threading.Thread(target=served.server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not served.server.started:
        assert time.monotonic() < deadline, "upstream did not start"
        time.sleep(0.02)
    yield served
    served.server.should_exit = True
    thread.join(timeout=10)


async def _gateway(
    tmp_path: Path, upstream: Upstream, ratio: float
) -> tuple[Platform, InMemorySpanExporter, httpx.AsyncClient]:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": KEY},
            "workflows": {"enabled": False},
            "tracing": {"enabled": True, "sampling_ratio": ratio, "service_name": "atrium-test"},
            "models": {
                "m": {
                    "backend": "openai_compat",
                    "base_url": f"http://127.0.0.1:{upstream.port}/v1",
                },
                # Nothing listens there: every call fails to connect.
                "down": {
                    "backend": "openai_compat",
                    "base_url": f"http://127.0.0.1:{_free_port()}/v1",
                },
            },
            "routes": {
                "r": {
                    "targets": [{"model": "down"}],
                    "fallbacks": ["m"],
                    "retries": 1,
                    "backoff_ms": 1,
                }
            },
        }
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    exporter = InMemorySpanExporter()
    platform.tracing = Tracing(settings.tracing, exporter=exporter)
    app = build_app(settings, platform)
    await platform.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app),
        base_url="http://atrium",
        headers={"authorization": f"Bearer {KEY}"},
    )
    return platform, exporter, client


@pytest_asyncio.fixture
async def traced(
    tmp_path: Path, upstream: Upstream
) -> AsyncIterator[tuple[InMemorySpanExporter, httpx.AsyncClient]]:
    platform, exporter, client = await _gateway(tmp_path, upstream, 1.0)
    try:
        yield exporter, client
    finally:
        await client.aclose()
        await platform.close()


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_callers_traceparent_continues_through_the_gateway_to_the_upstream(
    traced: tuple[InMemorySpanExporter, httpx.AsyncClient], upstream: Upstream
) -> None:
    exporter, client = traced
    upstream.traceparents.clear()
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    headers = {"traceparent": traceparent}
    answer = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["x-atrium-trace-id"] == CALLER_TRACE
    [server] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.name == "POST /v1/chat/completions"
    attributes = dict(server.attributes or {})
    assert attributes["http.route"] == "/v1/chat/completions"
    assert attributes["http.response.status_code"] == 200
    assert attributes["gen_ai.request.model"] == "m"
    assert attributes["gen_ai.usage.input_tokens"] == 7
    assert attributes["gen_ai.usage.output_tokens"] == 2
    assert str(attributes["atrium.served_by"]).startswith("m")
    # gateway -> router -> backend, all in the caller's trace.
    router, backend = _only(exporter, "router"), _only(exporter, "backend")
    assert _parent(router) == server.context.span_id
    assert _parent(backend) == router.context.span_id
    assert dict(router.attributes or {})["atrium.status"] == 200
    assert str(dict(router.attributes or {})["atrium.served_by"]).startswith("m@127.0.0.1:")
    assert backend.kind == SpanKind.CLIENT
    backend_attributes = dict(backend.attributes or {})
    assert backend_attributes["gen_ai.request.model"] == "m"
    assert backend_attributes["atrium.replica"] == f"m@127.0.0.1:{upstream.port}"
    assert backend_attributes["atrium.status"] == 200
    # The upstream was called inside the backend span, in the caller's trace.
    [sent] = upstream.traceparents
    assert sent is not None
    version, trace_id, parent_id, flags = sent.split("-")
    assert (version, trace_id, flags) == ("00", CALLER_TRACE, "01")
    assert parent_id == format(backend.context.span_id, "016x")


def _only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_route_shows_its_choice_retries_and_fallback_and_one_span_per_attempt(
    traced: tuple[InMemorySpanExporter, httpx.AsyncClient], upstream: Upstream
) -> None:
    exporter, client = traced
    upstream.traceparents.clear()
    answer = await client.post("/v1/chat/completions", json={**CHAT, "model": "r"})
    assert answer.status_code == 200
    router = _only(exporter, "router")
    events = [(e.name, dict(e.attributes or {})) for e in router.events]
    assert [name for name, _ in events] == ["route.target", "retry", "fallback"]
    assert events[0][1]["atrium.target"] == "down"
    assert events[1][1]["atrium.target"] == "down"
    assert events[1][1]["atrium.attempt"] == 1
    assert events[2][1]["atrium.failed"] == "down"
    assert events[2][1]["atrium.target"] == "m"
    attributes = dict(router.attributes or {})
    assert attributes["atrium.routed_to"] == "m"
    assert list(attributes["atrium.failed_targets"]) == ["down", "down"]  # type: ignore[arg-type]
    backends = sorted(
        (s for s in exporter.get_finished_spans() if s.name == "backend"),
        key=lambda s: s.start_time or 0,
    )
    assert [dict(s.attributes or {})["gen_ai.request.model"] for s in backends] == [
        "down", "down", "m"
    ]  # fmt: skip
    assert all(_parent(s) == router.context.span_id for s in backends)
    failed = dict(backends[0].attributes or {})
    assert failed["atrium.status"] == 502
    assert failed["error.type"]
    assert not backends[0].status.is_ok
    assert dict(backends[2].attributes or {})["atrium.status"] == 200
    [sent] = upstream.traceparents
    assert sent is not None
    assert sent.split("-")[2] == format(backends[2].context.span_id, "016x")


async def test_a_streamed_answer_keeps_its_backend_span_open_to_the_end(
    traced: tuple[InMemorySpanExporter, httpx.AsyncClient], upstream: Upstream
) -> None:
    exporter, client = traced
    upstream.traceparents.clear()
    answer = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert answer.status_code == 200
    assert answer.text.endswith("data: [DONE]\n\n")
    server = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER)
    router, backend = _only(exporter, "router"), _only(exporter, "backend")
    assert _parent(router) == server.context.span_id
    assert _parent(backend) == router.context.span_id
    assert dict(backend.attributes or {})["atrium.status"] == 200
    assert dict(router.attributes or {})["atrium.status"] == 200
    [sent] = upstream.traceparents
    assert sent is not None
    assert sent.split("-")[2] == format(backend.context.span_id, "016x")


async def test_a_new_trace_starts_without_a_traceparent_and_names_failures(
    traced: tuple[InMemorySpanExporter, httpx.AsyncClient],
) -> None:
    exporter, client = traced
    answer = await client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
    assert answer.status_code in (400, 404)
    trace_id = answer.headers["x-atrium-trace-id"]
    assert len(trace_id) == 32
    assert trace_id != CALLER_TRACE
    [server] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent is None
    assert dict(server.attributes or {})["http.response.status_code"] == answer.status_code


async def test_sampling_off_records_no_span_but_still_names_the_trace(
    tmp_path: Path, upstream: Upstream
) -> None:
    platform, exporter, client = await _gateway(tmp_path, upstream, 0.0)
    upstream.traceparents.clear()
    try:
        answer = await client.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200
        assert len(answer.headers["x-atrium-trace-id"]) == 32
        assert exporter.get_finished_spans() == ()
        # Not sampled: the upstream is told so (the sampled bit of the flags is clear).
        [sent] = upstream.traceparents
        assert sent is not None
        assert int(sent.rsplit("-", 1)[1], 16) & 1 == 0
    finally:
        await client.aclose()
        await platform.close()


async def test_tracing_off_still_names_the_trace_in_the_header_and_the_log_lines(
    tmp_path: Path, upstream: Upstream
) -> None:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": KEY},
            "workflows": {"enabled": False},
            "models": {
                "m": {
                    "backend": "openai_compat",
                    "base_url": f"http://127.0.0.1:{upstream.port}/v1",
                }
            },
        }
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    assert platform.tracing is None
    app = build_app(settings, platform)
    await platform.start()
    upstream.traceparents.clear()
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(RequestLineFormatter())
    handler.addFilter(TraceContextFilter())
    requests_log = logging.getLogger("atrium.requests")
    level = requests_log.level
    requests_log.addHandler(handler)
    requests_log.setLevel(logging.INFO)
    headers = {"authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium", headers=headers
        ) as client:
            fresh = await client.post("/v1/chat/completions", json=CHAT)
            again = await client.post("/v1/chat/completions", json=CHAT)
            continued = await client.post(
                "/v1/chat/completions",
                json=CHAT,
                headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            )
            refused = await client.post("/v1/chat/completions", json={"model": "nope"})
    finally:
        requests_log.removeHandler(handler)
        requests_log.setLevel(level)
        await platform.close()
    assert [a.status_code for a in (fresh, again, continued)] == [200, 200, 200]
    assert refused.status_code >= 400
    ids = [a.headers["x-atrium-trace-id"] for a in (fresh, again, continued, refused)]
    assert all(len(i) == 32 and int(i, 16) for i in ids[:2])
    assert ids[0] != ids[1]
    assert ids[2] == CALLER_TRACE
    assert len(set(ids)) == 4
    # Each request's log line carries the trace id its answer named.
    logged = [orjson.loads(line)["trace_id"] for line in lines.getvalue().splitlines()]
    assert logged == ids
    # No span exists, so none is passed on to the upstream.
    assert upstream.traceparents == [None, None, None]
