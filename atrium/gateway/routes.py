"""OpenAI-compatible routes: parse the HTTP request, call the service, answer."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import orjson
from fastapi import APIRouter, Request, Response
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from atrium.core.errors import AtriumError, ModelNotFoundError
from atrium.core.http import EventStreamResponse, error_response, json_response
from atrium.gateway.auth import KeyAuthenticator
from atrium.gateway.cache import CACHE_HEADER, cache_status
from atrium.gateway.service import InferenceService, Sse, overhead_ms
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.routing import request_headers, routed_to, served_by
from atrium.runtime.schema import JSON

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _answer(result: JSON | Sse) -> Response:
    headers = _gateway_headers()
    if isinstance(result, dict):
        return Response(orjson.dumps(result), media_type="application/json", headers=headers)
    return EventStreamResponse(
        result, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers}
    )


def _gateway_headers() -> dict[str, str]:
    """What the gateway says about the answer: who served it, the cache, its own time."""
    headers: dict[str, str] = {}
    served = served_by.get()
    if served is not None:
        headers["x-atrium-served-by"] = served
    arm = routed_to.get()
    if arm is not None:  # the route's arm (a deployment): what feedback is counted against
        headers["x-atrium-routed-to"] = arm
    cached = cache_status.get()
    if cached is not None:
        headers[CACHE_HEADER] = cached
    spent = overhead_ms.get()
    if spent is not None:
        headers["x-atrium-overhead-ms"] = f"{spent:.3f}"
    return headers


def _begin(headers: Headers) -> None:
    """Request-scoped context: the headers routing reads; no cache status carried over."""
    request_headers.set(headers)
    cache_status.set(None)
    served_by.set(None)
    overhead_ms.set(None)


_Handler = Callable[[str | None, bytes], Awaitable[JSON | Sse]]


def _handlers(service: InferenceService) -> dict[str, _Handler]:
    return {
        "/v1/chat/completions": service.chat,
        "/v1/completions": service.complete,
        "/v1/embeddings": service.embed,
    }


async def _serve(handler: _Handler, request: Request) -> Response:
    return await _respond(handler, request.headers, await request.body())


async def _respond(handler: _Handler, headers: Headers, body: bytes) -> Response:
    _begin(headers)
    return _answer(await handler(headers.get("authorization"), body))


async def _body(receive: Receive) -> bytes:
    """The request's body straight from the ASGI channel, as ``Request.body`` reads it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def inference_router(service: InferenceService) -> APIRouter:
    """``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``.

    Plain Starlette routes, not FastAPI's: the service parses and validates the body
    itself, so FastAPI's dependency resolution would only add latency to every call.
    Their contract is OpenAI's API reference, not this app's OpenAPI document.
    In the app, :class:`InferenceEndpoints` answers their POSTs ahead of the router.
    """
    router = APIRouter()
    for path, handler in _handlers(service).items():
        router.add_route(path, functools.partial(_serve, handler), methods=["POST"])
    return router


class InferenceEndpoints:
    """Pure ASGI: POSTs to the inference endpoints, answered ahead of the framework.

    On its way to a route a request would otherwise pass FastAPI's exception and
    exit-stack layers and a scan of the routing table, several percent of the
    gateway's CPU per request; the body is read straight from ``receive``, without
    a ``Request`` object. Errors are answered as the app's ``AtriumError`` handler
    answers them; anything unexpected propagates to the outer middleware as before.
    Other methods fall through to the router (a 405). It must sit inside the
    session-cookie middleware, which gives a signed-in browser's request its key.
    """

    def __init__(self, app: ASGIApp, *, service: InferenceService) -> None:
        self.app = app
        self._handlers = _handlers(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self._handlers.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope["endpoint"], scope["path_params"] = handler, {}  # as the router leaves them
        try:
            response = await _respond(handler, Headers(scope=scope), await _body(receive))
        except AtriumError as exc:
            response = error_response(exc)
        await response(scope, receive, send)


def models_router(catalog: ModelCatalog, auth: KeyAuthenticator) -> APIRouter:
    """``GET /v1/models`` and ``GET /v1/models/{model}``: what the caller's key may use."""
    router = APIRouter(prefix="/v1", tags=["inference"])

    def describe(public: str) -> JSON:
        entry = catalog.resolve(public)
        return {"id": public, "object": "model", "created": entry.created, "owned_by": "atrium"}

    @router.get("/models")
    async def list_models(request: Request) -> Response:
        principal = await auth.authenticate(request.headers.get("authorization"))
        allowed = principal.key.allowed_models
        names = [n for n in catalog.names() if allowed is None or _allowed(catalog, n, allowed)]
        return json_response({"object": "list", "data": [describe(n) for n in names]})

    @router.get("/models/{model:path}")
    async def get_model(model: str, request: Request) -> Response:
        principal = await auth.authenticate(request.headers.get("authorization"))
        allowed = principal.key.allowed_models
        if allowed is not None and not _allowed(catalog, model, allowed):
            msg = f"the model {model!r} does not exist"
            raise ModelNotFoundError(msg, param="model")
        return json_response(describe(model))

    return router


def _allowed(catalog: ModelCatalog, public: str, allowed: frozenset[str]) -> bool:
    return public in allowed or catalog.resolve(public).name in allowed
