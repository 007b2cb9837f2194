"""Hot-path concerns as pure ASGI middleware: request ids, unexpected errors, body size."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Sequence
from contextvars import ContextVar

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.core.errors import AtriumError, PayloadTooLargeError
from atrium.observability.propagation import trace_id_of

REQUEST_ID_HEADER = b"x-request-id"
TRACE_ID_HEADER = b"x-atrium-trace-id"
TRACEPARENT_HEADER = b"traceparent"

log = logging.getLogger("atrium.gateway")
#: The current request's id, for log lines (see atrium.observability.logging).
current_request_id: ContextVar[str | None] = ContextVar("atrium_request_id", default=None)
#: The current request's trace id when tracing is off (with tracing on, the span's).
current_trace_id: ContextVar[str | None] = ContextVar("atrium_trace_id", default=None)


class EdgeMiddleware:
    """The outer hot-path layer: request ids, unexpected errors and the body size limit.

    One pure ASGI layer, one wrapped ``send``, instead of three stacked middlewares:

    - every request gets an id (the caller's ``x-request-id`` if it is sane), kept in
      ``scope["state"]`` and :data:`current_request_id` and echoed on the response;
    - an unexpected exception is logged and answered with a 500 in OpenAI's shape
      naming the request id (unless the response had started), and is not re-raised,
      so the server keeps the connection healthy (Starlette's handler re-raises);
    - a body over ``max_bytes`` is refused with 413, by its declared length before
      reading or while a chunked body is read. ``overrides`` give other limits to
      paths matching a pattern (document uploads);
    - with ``trace_ids`` (tracing off: no span names the trace) every request gets a
      trace id, the caller's ``traceparent``'s or a new one, kept in
      :data:`current_trace_id` for log lines and sent as ``x-atrium-trace-id``.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        overrides: Sequence[tuple[re.Pattern[str], int]] = (),
        *,
        trace_ids: bool = False,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = tuple(overrides)
        # A declared length under every limit needs neither the path's limit nor counting.
        self._floor = min([max_bytes, *(limit for _, limit in self.overrides)])
        # Ids need to be unique, not secret: a random prefix per app and a counter
        # (24 hex digits) instead of a call into the OS for random bytes per request.
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(secrets.randbelow(2**32))
        # A trace id is 32 hex digits: 20 random per app, then the same counter.
        self._trace_prefix = secrets.token_hex(10) if trace_ids else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or f"{self._prefix}{next(self._counter) % 2**48:012x}"
        scope.setdefault("state", {})["request_id"] = request_id
        current_request_id.set(request_id)
        headers = [(REQUEST_ID_HEADER, request_id.encode("ascii"))]
        if self._trace_prefix is not None:
            trace_id = (
                _incoming_trace_id(scope)
                or f"{self._trace_prefix}{next(self._counter) % 2**48:012x}"
            )
            current_trace_id.set(trace_id)
            headers.append((TRACE_ID_HEADER, trace_id.encode("ascii")))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        declared, counted = _framing(scope)
        if counted or (declared is not None and declared > self._floor):
            limit = self._limit(scope["path"])
            if declared is not None and declared > limit:
                await send_error(send_with_id, _too_large(limit))
                return
            if counted:
                receive = _limited(receive, limit)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error on %s %s (request %s)", scope["method"], scope["path"], request_id
            )
            if not started:
                message = f"internal error (request id {request_id}); it has been logged"
                await send_error(send_with_id, AtriumError(message))

    def _limit(self, path: str) -> int:
        for pattern, limit in self.overrides:
            if pattern.fullmatch(path):
                return limit
        return self.max_bytes


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 128 and text.isascii() and text.isprintable():
                return text
    return None


def _incoming_trace_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == TRACEPARENT_HEADER:
            return trace_id_of(value.decode("latin-1"))
    return None


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises 413 once the body read so far is over ``limit``."""
    seen = 0

    async def limited_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return limited_receive


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body is larger than {limit} bytes")


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared content length, and whether the body must be counted as it is read.

    The server holds a body to its declared length; one sent chunked is counted.
    """
    declared: int | None = None
    seen_length = chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length" and not seen_length:
            seen_length = True
            declared = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked or declared is None


async def send_error(send: Send, error: AtriumError) -> None:
    """Answer with an error in OpenAI's JSON shape, straight on the ASGI channel."""
    body = orjson.dumps(error.to_openai())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
