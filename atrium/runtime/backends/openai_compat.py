"""Any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, TGI, OpenAI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from atrium.core.errors import (
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.core.settings import OpenAICompatModel
from atrium.runtime.base import BackendBase, Capability, Health, StreamEvent
from atrium.runtime.schema import (
    JSON,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Usage,
)

_JSON_HEADERS = {"content-type": "application/json"}
# Upstream statuses passed on to the caller as they are; anything else is our failure.
_PASS_THROUGH = frozenset({400, 404, 409, 413, 422, 429})


def build_client(spec: OpenAICompatModel, base_url: str) -> httpx.AsyncClient:
    """A pooled client for one upstream, with the spec's timeouts.

    The transport is aiohttp's (C-accelerated parser and connection pool) behind
    httpx's interface: on the gateway's hot path it costs about half the CPU of
    httpcore's pure-Python one (see bench/README.md).
    """
    limits = httpx.Limits(
        max_connections=spec.max_connections, max_keepalive_connections=spec.max_connections
    )
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        transport=AiohttpTransport(limits=limits, trust_env=False),
        trust_env=False,
        timeout=httpx.Timeout(spec.timeout_seconds, connect=spec.connect_timeout_seconds),
    )


class OpenAICompatBackend(BackendBase):
    """Forwards requests to an upstream and streams its answers through unbuffered."""

    def __init__(
        self, name: str, spec: OpenAICompatModel, client: httpx.AsyncClient | None = None
    ) -> None:
        self.name = name
        self.capabilities = frozenset(Capability(c) for c in spec.capabilities)
        self._upstream_model = spec.upstream_model or name
        self.completion_estimate = spec.completion_estimate
        self._client = client or build_client(spec, str(spec.base_url))
        # Requests are built here rather than by client.post(): it skips per-call URL
        # merging (a tenth of the gateway's overhead); timeouts still come from the client.
        self._timeout = self._client.timeout.as_dict()
        self._urls = {
            path: self._client.base_url.join(path.lstrip("/"))
            for path in ("/chat/completions", "/completions", "/embeddings", "/models")
        }
        self._headers = dict(_JSON_HEADERS)
        if spec.api_key is not None:
            self._headers["authorization"] = f"Bearer {spec.api_key.get_secret_value()}"

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _body(self, request: Any, *, stream: bool) -> bytes:
        body: JSON = request.model_dump(exclude_unset=True)
        body["model"] = self._upstream_model
        if stream:
            # Always ask for usage: limits and metrics need it. The final usage chunk
            # reaches the client only if it asked (StreamEvent.usage_only).
            body["stream"] = True
            body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
        return orjson.dumps(body)

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """Forward a chat completion."""
        return await self._post("/chat/completions", self._body(request, stream=False))

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """Forward a streamed chat completion chunk by chunk."""
        body = self._body(request, stream=True)
        return self._stream("/chat/completions", body, _tokens_in(request.prompt_chars()))

    async def complete(self, request: CompletionRequest) -> JSON:
        """Forward a text completion."""
        return await self._post("/completions", self._body(request, stream=False))

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """Forward a streamed text completion chunk by chunk."""
        body = self._body(request, stream=True)
        return self._stream("/completions", body, _tokens_in(request.prompt_chars()))

    async def embed(self, request: EmbeddingRequest) -> JSON:
        """Forward an embeddings request."""
        if Capability.EMBEDDINGS not in self.capabilities:
            raise self._unsupported(Capability.EMBEDDINGS)
        return await self._post("/embeddings", self._body(request, stream=False))

    async def health(self) -> Health:
        """Ready when the upstream answers ``GET /models``."""
        try:
            response = await self._client.get("/models", headers=self._headers, timeout=5.0)
        except httpx.HTTPError as exc:
            return Health(ready=False, detail=f"{type(exc).__name__} reaching upstream")
        if response.status_code >= 500:
            return Health(ready=False, detail=f"upstream answered {response.status_code}")
        return Health(ready=True)

    async def _post(self, path: str, body: bytes) -> JSON:
        try:
            response = await self._client.send(self._request(path, body))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            result: JSON = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            msg = f"upstream for {self.name!r} answered with invalid JSON"
            raise UpstreamError(msg) from exc
        return result

    async def _stream(
        self, path: str, body: bytes, prompt_estimate: int
    ) -> AsyncIterator[StreamEvent]:
        try:
            response = await self._client.send(self._request(path, body), stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        tally = _Tally()
        try:
            if response.status_code >= 400:
                await response.aread()
                raise self._status_error(response)
            done = False
            async for line in response.aiter_lines():
                # After [DONE], read on to the end of the body rather than break: a
                # response closed early cannot give its connection back to the pool.
                if done or not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                done = payload == "[DONE]"
                if not done:
                    yield tally.see(_event(payload.encode()))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        if not tally.usage_seen:
            yield tally.estimated_usage(prompt_estimate)

    def _request(self, path: str, body: bytes) -> httpx.Request:
        return httpx.Request(
            "POST",
            self._urls[path],
            content=body,
            headers=self._headers,
            extensions={"timeout": self._timeout},
        )

    def _transport_error(self, exc: httpx.HTTPError) -> UpstreamError:
        if _timed_out(exc):
            return UpstreamTimeoutError(f"upstream for {self.name!r} timed out")
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return UpstreamError(f"cannot connect to the upstream for {self.name!r}")
        return UpstreamError(f"upstream for {self.name!r} failed: {type(exc).__name__}")

    def _status_error(self, response: httpx.Response) -> UpstreamError | UpstreamStatusError:
        status = response.status_code
        if status not in _PASS_THROUGH:
            return UpstreamError(f"upstream for {self.name!r} answered {status}")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = {}
        headers = {}
        if "retry-after" in response.headers:
            headers["retry-after"] = response.headers["retry-after"]
        return UpstreamStatusError(status, body if isinstance(body, dict) else {}, headers)


def _timed_out(exc: httpx.HTTPError) -> bool:
    """Whether a transport error is a timeout.

    httpx-aiohttp maps every aiohttp connection error, a refused connection
    included, to ``ConnectTimeout``; the aiohttp error it chains tells the truth.
    """
    if not isinstance(exc, httpx.TimeoutException):
        return False
    cause = exc.__cause__
    return not (isinstance(cause, OSError) and not isinstance(cause, TimeoutError))


def _tokens_in(chars: int) -> int:
    return max(1, chars // 4)


class _Tally:
    """Counts a stream's chunks, for upstreams that ignore ``include_usage``."""

    def __init__(self) -> None:
        self.usage_seen = False
        self.chunks = 0
        self.last: bytes | None = None

    def see(self, event: StreamEvent) -> StreamEvent:
        self.usage_seen = self.usage_seen or event.usage is not None
        self.chunks += 1
        self.last = event.data
        return event

    def estimated_usage(self, prompt_tokens: int) -> StreamEvent:
        """A final usage chunk: roughly one token per content chunk."""
        last = orjson.loads(self.last) if self.last else {}
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=max(0, self.chunks - 2))
        chunk = {
            "id": last.get("id", ""),
            "object": last.get("object", "chat.completion.chunk"),
            "created": last.get("created", 0),
            "model": last.get("model", ""),
            "choices": [],
            "usage": usage.to_openai(),
        }
        return StreamEvent(orjson.dumps(chunk), usage, usage_only=True)


def _event(data: bytes) -> StreamEvent:
    """Wrap one upstream chunk, reading usage only from chunks that carry it."""
    if b'"usage"' not in data:
        return StreamEvent(data)
    chunk = orjson.loads(data)
    usage = chunk.get("usage")
    if not usage:
        return StreamEvent(data)
    return StreamEvent(data, Usage.from_openai(usage), usage_only=not chunk.get("choices"))
