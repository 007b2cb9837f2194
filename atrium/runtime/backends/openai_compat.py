"""Any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, TGI, OpenAI)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import orjson

from atrium.core.errors import (
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.core.settings import OpenAICompatModel
from atrium.observability.propagation import with_traceparent
from atrium.runtime.base import BackendBase, Capability, Health, StreamEvent
from atrium.runtime.credentials import StoredCredential
from atrium.runtime.schema import (
    JSON,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Usage,
)

_JSON_HEADERS = {"content-type": "application/json"}
_HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
# Upstream statuses passed on to the caller as they are; anything else is our failure.
_PASS_THROUGH = frozenset({400, 404, 409, 413, 422, 429})


def build_session(spec: OpenAICompatModel) -> aiohttp.ClientSession:
    """A pooled client session for one upstream; call on the loop that will use it.

    aiohttp directly, without an httpx layer over it: the httpx request and response
    objects around each call cost about twice aiohttp's own CPU per request. The
    session keeps no cookies (one caller's upstream cookies must never reach the
    next), ignores proxy variables and follows no redirects. It decodes a compressed
    body as httpx did, though upstreams on a local network rarely compress.
    """
    # Idle connections are dropped before uvicorn's 5 s keep-alive (vLLM, most Python
    # servers) ends them upstream: a POST sent as the upstream closes is not retried.
    connector = aiohttp.TCPConnector(limit=spec.max_connections, keepalive_timeout=4.0)
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=spec.timeout_seconds,  # waiting for a pooled connection and connecting
        sock_connect=spec.connect_timeout_seconds,
        sock_read=spec.timeout_seconds,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        raise_for_status=False,
    )


class OpenAICompatBackend(BackendBase):
    """Forwards requests to an upstream and streams its answers through unbuffered."""

    def __init__(
        self,
        name: str,
        spec: OpenAICompatModel,
        *,
        base_url: str | None = None,
        credential: StoredCredential | None = None,
    ) -> None:
        self.name = name
        self.capabilities = frozenset(Capability(c) for c in spec.capabilities)
        self._upstream_model = spec.upstream_model or name
        self.completion_estimate = spec.completion_estimate
        self._spec = spec
        # Made on first use: a session belongs to the loop it was made on.
        self._client: aiohttp.ClientSession | None = None
        base = (base_url or str(spec.base_url)).rstrip("/")
        self._urls = {
            path: base + path
            for path in ("/chat/completions", "/completions", "/embeddings", "/models")
        }
        self._headers = dict(_JSON_HEADERS)
        if spec.api_key is not None:
            self._headers["authorization"] = f"Bearer {spec.api_key.get_secret_value()}"
        # A key from the secret store: read before each call, the headers remade on a change.
        self._credential = credential
        self._credential_value: str | None = None

    async def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _session(self) -> aiohttp.ClientSession:
        client = self._client
        if client is None or client.closed:
            client = self._client = build_session(self._spec)
        return client

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
        if self._credential is not None:
            try:
                await self._use_current_key()
            except UpstreamError as exc:
                return Health(ready=False, detail=exc.message)
        try:
            async with self._session().get(
                self._urls["/models"],
                headers=self._headers,
                timeout=_HEALTH_TIMEOUT,
                allow_redirects=False,
            ) as response:
                await response.read()  # read to the end: the connection stays pooled
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Health(ready=False, detail=f"{type(exc).__name__} reaching upstream")
        if response.status >= 500:
            return Health(ready=False, detail=f"upstream answered {response.status}")
        return Health(ready=True)

    async def _post(self, path: str, body: bytes) -> JSON:
        if self._credential is not None:
            await self._use_current_key()
        try:
            async with self._send(path, body) as response:
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        if response.status >= 400:
            raise self._status_error(response.status, content, response.headers)
        try:
            result: JSON = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            msg = f"upstream for {self.name!r} answered with invalid JSON"
            raise UpstreamError(msg) from exc
        return result

    async def _stream(
        self, path: str, body: bytes, prompt_estimate: int
    ) -> AsyncIterator[StreamEvent]:
        if self._credential is not None:
            await self._use_current_key()
        tally = _Tally()
        try:
            # Leaving this block, early too (a consumer that stops reading, closed by
            # ``aclosing``), releases the response: a body read to its end goes back
            # to the pool, an unfinished one has its connection closed.
            async with self._send(path, body) as response:
                if response.status >= 400:
                    content = await response.read()
                    raise self._status_error(response.status, content, response.headers)
                done = False
                async for payload, more in _sse_data(response.content.iter_any()):
                    # After [DONE], read on to the end of the body rather than break: a
                    # response closed early cannot give its connection back to the pool.
                    done = done or payload == b"[DONE]"
                    if not done:
                        yield tally.see(_event(payload, more=more))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        if not tally.usage_seen:
            yield tally.estimated_usage(prompt_estimate)

    async def _use_current_key(self) -> None:
        assert self._credential is not None
        value = await self._credential.value()
        if value != self._credential_value:
            # A new dict, not a change in place: requests being built keep the old one.
            self._headers = {**self._headers, "authorization": f"Bearer {value}"}
            self._credential_value = value

    def _send(self, path: str, body: bytes) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST ``body``: an async context manager that yields the response."""
        return self._session().post(
            self._urls[path],
            data=body,
            headers=with_traceparent(self._headers),  # the same dict when not tracing
            allow_redirects=False,
        )

    def _transport_error(self, exc: aiohttp.ClientError | TimeoutError) -> UpstreamError:
        # aiohttp's timeouts (connect, pool, read) are all TimeoutError subclasses.
        if isinstance(exc, TimeoutError):
            return UpstreamTimeoutError(f"upstream for {self.name!r} timed out")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamError(f"cannot connect to the upstream for {self.name!r}")
        return UpstreamError(f"upstream for {self.name!r} failed: {type(exc).__name__}")

    def _status_error(
        self, status: int, content: bytes, headers: Mapping[str, str]
    ) -> UpstreamError | UpstreamStatusError:
        if status not in _PASS_THROUGH:
            return UpstreamError(f"upstream for {self.name!r} answered {status}")
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = {}
        passed = {}
        retry_after = headers.get("retry-after")  # aiohttp's headers ignore case
        if retry_after is not None:
            passed["retry-after"] = retry_after
        return UpstreamStatusError(status, body if isinstance(body, dict) else {}, passed)


async def _sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bool]]:
    """The payloads of an SSE body's ``data:`` lines, split as bytes (no text decoding).

    Each with whether another payload (``[DONE]`` included) came in the same read.
    """
    pending = b""
    async for chunk in chunks:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        payloads = [line[5:].strip() for line in lines if line.startswith(b"data:")]
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            yield payload, i < last
    if pending.startswith(b"data:"):
        yield pending[5:].strip(), False


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
        # The stream's last event: its end follows at once.
        return StreamEvent(orjson.dumps(chunk), usage, usage_only=True, more=True)


def _event(data: bytes, *, more: bool = False) -> StreamEvent:
    """Wrap one upstream chunk, reading usage only from chunks that carry it."""
    if b'"usage"' not in data:
        return StreamEvent(data, more=more)
    chunk = orjson.loads(data)
    usage = chunk.get("usage")
    if not usage:
        return StreamEvent(data, more=more)
    usage_only = not chunk.get("choices")
    return StreamEvent(data, Usage.from_openai(usage), usage_only=usage_only, more=more)
