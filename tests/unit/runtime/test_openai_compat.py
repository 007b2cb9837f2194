"""The upstream backend over httpx's MockTransport, which answers in OpenAI's wire format."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest

from atrium.core.errors import (
    UnsupportedError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.core.settings import OpenAICompatModel
from atrium.runtime.backends.openai_compat import OpenAICompatBackend
from atrium.runtime.schema import ChatCompletionRequest, EmbeddingRequest

Handler = Callable[[httpx.Request], httpx.Response]

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


def _backend(handler: Handler, **spec: object) -> OpenAICompatBackend:
    model = OpenAICompatModel(
        base_url="http://upstream.test/v1", upstream_model="upstream-name", **spec
    )  # type: ignore[arg-type]
    client = httpx.AsyncClient(
        base_url="http://upstream.test/v1", transport=httpx.MockTransport(handler)
    )
    return OpenAICompatBackend("ours", model, client)


def _chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "ours", "messages": [{"role": "user", "content": "hello"}], **fields}
    )


@pytest.fixture
def seen() -> list[httpx.Request]:
    return []


async def test_chat_forwards_the_body_with_the_upstream_model_name(
    seen: list[httpx.Request],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=COMPLETION)

    backend = _backend(handler, api_key="sk-upstream")
    result = await backend.chat(_chat(max_tokens=3, top_k=5))
    await backend.close()
    assert result == COMPLETION
    sent = orjson.loads(seen[0].content)
    assert sent == {
        "model": "upstream-name",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 3,
        "top_k": 5,  # unknown parameters pass through to servers that know them
    }
    assert seen[0].url.path == "/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-upstream"


async def test_stream_passes_chunks_through_and_marks_the_usage_chunk(
    seen: list[httpx.Request],
) -> None:
    body = _sse(_chunk("he"), _chunk("llo"), _chunk(None, finish="stop"), USAGE_CHUNK)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    backend = _backend(handler)
    events = [e async for e in backend.chat_stream(_chat(stream=True))]
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
    assert orjson.loads(seen[0].content)["stream_options"] == {"include_usage": True}


async def test_stream_without_upstream_usage_gets_an_estimate() -> None:
    body = _sse(_chunk(""), _chunk("a"), _chunk("b"), _chunk("c"), _chunk(None, finish="stop"))
    backend = _backend(
        lambda _: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    events = [e async for e in backend.chat_stream(_chat(stream=True))]
    await backend.close()
    final = events[-1]
    assert final.usage_only
    assert final.usage is not None
    assert final.usage.completion_tokens == 3
    assert final.usage.prompt_tokens >= 1
    assert orjson.loads(final.data)["choices"] == []


@pytest.mark.parametrize("status", [400, 404, 422, 429])
async def test_client_errors_from_the_upstream_pass_through(status: int) -> None:
    error = {
        "error": {"message": "nope", "type": "invalid_request_error", "param": None, "code": None}
    }
    backend = _backend(lambda _: httpx.Response(status, json=error, headers={"retry-after": "7"}))
    with pytest.raises(UpstreamStatusError) as raised:
        await backend.chat(_chat())
    await backend.close()
    assert raised.value.upstream_status == status
    assert raised.value.to_openai() == error
    assert raised.value.headers == {"retry-after": "7"}


@pytest.mark.parametrize("status", [401, 403, 500, 503])
async def test_upstream_failures_become_502(status: int) -> None:
    backend = _backend(lambda _: httpx.Response(status, text="<html>bad</html>"))
    with pytest.raises(UpstreamError) as raised:
        await backend.chat(_chat())
    await backend.close()
    assert raised.value.status == 502
    assert f"answered {status}" in raised.value.message


async def test_stream_errors_before_the_first_chunk_raise() -> None:
    backend = _backend(lambda _: httpx.Response(429, json={"error": {"message": "slow down"}}))
    with pytest.raises(UpstreamStatusError, match="slow down"):
        _ = [e async for e in backend.chat_stream(_chat(stream=True))]
    await backend.close()


async def test_connection_failures_and_timeouts_are_named() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    backend = _backend(refuse)
    with pytest.raises(UpstreamError, match="cannot connect to the upstream") as refused:
        await backend.chat(_chat())
    assert refused.value.status == 502
    await backend.close()
    backend = _backend(stall)
    with pytest.raises(UpstreamTimeoutError) as timed_out:
        await backend.chat(_chat())
    assert timed_out.value.status == 504
    await backend.close()


async def test_invalid_json_from_the_upstream_is_a_502() -> None:
    backend = _backend(lambda _: httpx.Response(200, text="not json"))
    with pytest.raises(UpstreamError, match="invalid JSON"):
        await backend.chat(_chat())
    await backend.close()


async def test_embeddings_only_when_the_upstream_serves_them() -> None:
    reply = {
        "object": "list",
        "data": [],
        "model": "e",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    request = EmbeddingRequest(model="ours", input="x")
    plain = _backend(lambda _: httpx.Response(200, json=reply))
    with pytest.raises(UnsupportedError, match="does not support embeddings"):
        await plain.embed(request)
    await plain.close()
    capable = _backend(lambda _: httpx.Response(200, json=reply), capabilities=["embeddings"])
    assert await capable.embed(request) == reply
    await capable.close()


async def test_health_reflects_the_upstream() -> None:
    up = _backend(lambda _: httpx.Response(200, json={"object": "list", "data": []}))
    assert (await up.health()).ready
    await up.close()
    down = _backend(lambda _: httpx.Response(503))
    assert not (await down.health()).ready
    await down.close()
