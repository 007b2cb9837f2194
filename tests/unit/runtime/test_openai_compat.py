"""The upstream backend against a real OpenAI-compatible server on 127.0.0.1 (aiohttp.web).

Each test scripts the upstream's answer; the backend's own aiohttp session does the
rest (pool, timeouts, SSE parsing), so what runs here is what runs in production.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from atrium.core.errors import (
    UnsupportedError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.core.settings import OpenAICompatModel
from atrium.runtime.backends.openai_compat import OpenAICompatBackend
from atrium.runtime.base import StreamEvent
from atrium.runtime.schema import ChatCompletionRequest, EmbeddingRequest

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream-name",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


def _chunk(content: str | None, *, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "upstream-name",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


USAGE_CHUNK = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-name",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
)


def _sse(*events: bytes) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events) + b"data: [DONE]\n\n"


class Upstream:
    """Answers ``/v1/*`` with whatever the test scripts, and records what it was sent."""

    def __init__(self) -> None:
        self.answer: Answer = _json(COMPLETION)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.peers: list[int] = []  # the client port of each request: one per connection
        self.app = web.Application()
        self.app.router.add_route("*", "/v1/{path:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(peer[1] if peer else 0)
        return await self.answer(request)


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    async def answer(_: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return answer


def _raw(body: bytes, status: int = 200, content_type: str = "application/json") -> Answer:
    async def answer(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, content_type=content_type)

    return answer


def _stream(*writes: bytes, between: asyncio.Event | None = None) -> Answer:
    """An SSE body sent in ``writes`` (chunked), waiting for ``between`` after the first."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i, write in enumerate(writes):
            if i == 1 and between is not None:
                await between.wait()
            await response.write(write)
        await response.write_eof()
        return response

    return answer


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    served = Upstream()
    server = TestServer(served.app, host="127.0.0.1")
    await server.start_server()
    yield served, f"http://127.0.0.1:{server.port}/v1"
    await server.close()


def _backend(base_url: str, **spec: object) -> OpenAICompatBackend:
    model = OpenAICompatModel.model_validate(
        {"base_url": base_url, "upstream_model": "upstream-name", **spec}
    )
    return OpenAICompatBackend("ours", model)


def _chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "ours", "messages": [{"role": "user", "content": "hello"}], **fields}
    )


async def _events(
    backend: OpenAICompatBackend, into: list[StreamEvent] | None = None
) -> list[StreamEvent]:
    events = [] if into is None else into
    async for event in backend.chat_stream(_chat(stream=True)):
        events.append(event)
    return events


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it once the socket is closed


async def test_chat_forwards_the_body_with_the_upstream_model_name(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream
    backend = _backend(url, api_key="sk-upstream")
    result = await backend.chat(_chat(max_tokens=3, top_k=5))
    await backend.close()
    assert result == COMPLETION
    path, headers, body = served.requests[0]
    assert orjson.loads(body) == {
        "model": "upstream-name",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 3,
        "top_k": 5,  # unknown parameters pass through to servers that know them
    }
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-upstream"
    assert headers["Content-Type"] == "application/json"


async def test_no_cookie_is_carried_from_one_caller_to_the_next(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream
    served.answer = _json(COMPLETION, headers={"set-cookie": "session=caller-one; Path=/"})
    backend = _backend(url)
    await backend.chat(_chat())
    await backend.chat(_chat())
    await backend.close()
    assert all("Cookie" not in headers for _, headers, _ in served.requests)


async def test_stream_passes_chunks_through_and_marks_the_usage_chunk(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream
    served.answer = _stream(
        _sse(_chunk("he"), _chunk("llo"), _chunk(None, finish="stop"), USAGE_CHUNK)
    )
    backend = _backend(url)
    events = await _events(backend)
    await backend.close()
    assert [e.data for e in events] == [
        _chunk("he"),
        _chunk("llo"),
        _chunk(None, finish="stop"),
        USAGE_CHUNK,
    ]
    assert [e.usage_only for e in events] == [False, False, False, True]
    assert events[-1].usage is not None
    assert events[-1].usage.total_tokens == 7
    # Usage is always asked of the upstream; the gateway decides whether the client sees it.
    assert orjson.loads(served.requests[0][2])["stream_options"] == {"include_usage": True}


async def test_stream_without_upstream_usage_gets_an_estimate(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream
    chunks = (_chunk(""), _chunk("a"), _chunk("b"), _chunk("c"), _chunk(None, finish="stop"))
    served.answer = _stream(_sse(*chunks))
    backend = _backend(url)
    events = await _events(backend)
    await backend.close()
    final = events[-1]
    assert final.usage_only
    assert final.usage is not None
    assert final.usage.completion_tokens == 3
    assert final.usage.prompt_tokens >= 1
    assert orjson.loads(final.data)["choices"] == []


async def test_events_of_one_read_say_that_more_follow_at_once(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream
    second_write = asyncio.Event()
    served.answer = _stream(
        b"data: " + _chunk("a") + b"\n\ndata: " + _chunk("b") + b"\n\n",
        b"data: " + _chunk(None, finish="stop") + b"\n\ndata: [DONE]\n\n",
        between=second_write,
    )
    backend = _backend(url)
    events = []
    async for event in backend.chat_stream(_chat(stream=True)):
        events.append(event)
        if len(events) == 2:  # the upstream sends the rest only once both were seen
            second_write.set()
    await backend.close()
    # The last event before [DONE] may be held too: the body ends right after it.
    assert [(e.data, e.more) for e in events[:3]] == [
        (_chunk("a"), True),
        (_chunk("b"), False),
        (_chunk(None, finish="stop"), True),
    ]
    assert events[3].usage_only  # the estimate, after the body ended: the end follows
    assert events[3].more


async def test_a_finished_stream_gives_its_connection_back_to_the_pool(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream
    served.answer = _stream(_sse(_chunk("a"), USAGE_CHUNK))
    backend = _backend(url)
    await _events(backend)
    await _events(backend)
    await backend.close()
    assert served.peers[0] == served.peers[1]


async def test_a_consumer_that_stops_early_closes_the_connection(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream
    never = asyncio.Event()
    served.answer = _stream(b"data: " + _chunk("a") + b"\n\n", b"never sent", between=never)
    backend = _backend(url)
    stream = backend.chat_stream(_chat(stream=True))
    assert isinstance(stream, AsyncGenerator)
    first = await anext(stream)
    await stream.aclose()  # what ``contextlib.aclosing`` does when a consumer leaves
    assert first.data == _chunk("a")
    # The half-read connection was dropped, not pooled: the next call opens another.
    served.answer = _json(COMPLETION)
    assert await backend.chat(_chat()) == COMPLETION
    await backend.close()
    assert served.peers[0] != served.peers[1]


async def test_a_stream_cut_mid_way_is_an_upstream_failure(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + _chunk("a") + b"\n\n")
        assert request.transport is not None
        request.transport.close()  # before the chunked body's last chunk
        return response

    served.answer = cut
    backend = _backend(url)
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamError, match="failed: ClientPayloadError") as raised:
        await _events(backend, into=events)
    await backend.close()
    assert [e.data for e in events] == [_chunk("a")]
    assert raised.value.status == 502


@pytest.mark.parametrize("status", [400, 404, 422, 429])
async def test_client_errors_from_the_upstream_pass_through(
    upstream: tuple[Upstream, str], status: int
) -> None:
    served, url = upstream
    error = {
        "error": {"message": "nope", "type": "invalid_request_error", "param": None, "code": None}
    }
    served.answer = _json(error, status=status, headers={"Retry-After": "7"})
    backend = _backend(url)
    with pytest.raises(UpstreamStatusError) as raised:
        await backend.chat(_chat())
    await backend.close()
    assert raised.value.upstream_status == status
    assert raised.value.to_openai() == error
    assert raised.value.headers == {"retry-after": "7"}


@pytest.mark.parametrize("status", [401, 403, 500, 503])
async def test_upstream_failures_become_502(upstream: tuple[Upstream, str], status: int) -> None:
    served, url = upstream
    served.answer = _raw(b"<html>bad</html>", status=status, content_type="text/html")
    backend = _backend(url)
    with pytest.raises(UpstreamError) as raised:
        await backend.chat(_chat())
    await backend.close()
    assert raised.value.status == 502
    assert f"answered {status}" in raised.value.message


async def test_stream_errors_before_the_first_chunk_raise(upstream: tuple[Upstream, str]) -> None:
    served, url = upstream
    served.answer = _json({"error": {"message": "slow down"}}, status=429)
    backend = _backend(url)
    with pytest.raises(UpstreamStatusError, match="slow down"):
        await _events(backend)
    await backend.close()


async def test_a_closed_port_is_named_a_connection_failure() -> None:
    backend = _backend(f"http://127.0.0.1:{_closed_port()}/v1")
    with pytest.raises(UpstreamError, match="cannot connect to the upstream") as refused:
        await backend.chat(_chat())
    assert refused.value.status == 502
    with pytest.raises(UpstreamError, match="cannot connect to the upstream"):
        await _events(backend)
    await backend.close()


async def test_a_slow_upstream_times_out(upstream: tuple[Upstream, str]) -> None:
    served, url = upstream
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response(COMPLETION)

    served.answer = slow
    backend = _backend(url, timeout_seconds=0.2)
    with pytest.raises(UpstreamTimeoutError) as timed_out:
        await backend.chat(_chat())
    assert timed_out.value.status == 504
    release.set()
    await backend.close()


async def test_a_stream_that_stalls_mid_way_times_out(upstream: tuple[Upstream, str]) -> None:
    served, url = upstream
    release = asyncio.Event()
    served.answer = _stream(b"data: " + _chunk("a") + b"\n\n", b"", between=release)
    backend = _backend(url, timeout_seconds=0.2)
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamTimeoutError):
        await _events(backend, into=events)
    assert len(events) == 1
    release.set()
    await backend.close()


async def test_invalid_json_from_the_upstream_is_a_502(upstream: tuple[Upstream, str]) -> None:
    served, url = upstream
    served.answer = _raw(b"not json")
    backend = _backend(url)
    with pytest.raises(UpstreamError, match="invalid JSON"):
        await backend.chat(_chat())
    await backend.close()


async def test_embeddings_only_when_the_upstream_serves_them(
    upstream: tuple[Upstream, str],
) -> None:
    served, url = upstream
    reply = {
        "object": "list",
        "data": [],
        "model": "e",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    served.answer = _json(reply)
    request = EmbeddingRequest(model="ours", input="x")
    plain = _backend(url)
    with pytest.raises(UnsupportedError, match="does not support embeddings"):
        await plain.embed(request)
    await plain.close()
    capable = _backend(url, capabilities=["embeddings"])
    assert await capable.embed(request) == reply
    await capable.close()
    assert [path for path, _, _ in served.requests] == ["/v1/embeddings"]


async def test_health_reflects_the_upstream(upstream: tuple[Upstream, str]) -> None:
    served, url = upstream
    served.answer = _json({"object": "list", "data": []})
    backend = _backend(url)
    assert (await backend.health()).ready
    assert served.requests[-1][0] == "/v1/models"
    served.answer = _raw(b"", status=503)
    down = await backend.health()
    assert not down.ready
    assert down.detail == "upstream answered 503"
    await backend.close()
    unreachable = _backend(f"http://127.0.0.1:{_closed_port()}/v1")
    gone = await unreachable.health()
    assert not gone.ready
    assert gone.detail is not None
    assert "reaching upstream" in gone.detail
    await unreachable.close()
