"""OpenAI-compatible routes: parse the HTTP request, call the service, answer."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from atrium.core.errors import ModelNotFoundError
from atrium.core.http import json_response
from atrium.gateway.auth import KeyAuthenticator
from atrium.gateway.cache import CACHE_HEADER, cache_status
from atrium.gateway.service import InferenceService, Sse, overhead_ms
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.routing import request_headers, served_by
from atrium.runtime.schema import JSON

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _answer(result: JSON | Sse) -> Response:
    served = served_by.get()
    if isinstance(result, dict):
        response = json_response(result)
    else:
        response = StreamingResponse(result, media_type="text/event-stream", headers=_SSE_HEADERS)
    if served is not None:
        response.headers["x-atrium-served-by"] = served
    cached = cache_status.get()
    if cached is not None:
        response.headers[CACHE_HEADER] = cached
    spent = overhead_ms.get()
    if spent is not None:
        response.headers["x-atrium-overhead-ms"] = f"{spent:.3f}"
    return response


def _begin(request: Request) -> None:
    """Request-scoped context: the headers routing reads; no cache status carried over."""
    request_headers.set(request.headers)
    cache_status.set(None)
    served_by.set(None)
    overhead_ms.set(None)


def inference_router(service: InferenceService) -> APIRouter:
    """``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``.

    Plain Starlette routes, not FastAPI's: the service parses and validates the body
    itself, so FastAPI's dependency resolution would only add latency to every call.
    Their contract is OpenAI's API reference, not this app's OpenAPI document.
    """
    router = APIRouter()

    async def chat_completions(request: Request) -> Response:
        _begin(request)
        body = await request.body()
        return _answer(await service.chat(request.headers.get("authorization"), body))

    async def completions(request: Request) -> Response:
        _begin(request)
        body = await request.body()
        return _answer(await service.complete(request.headers.get("authorization"), body))

    async def embeddings(request: Request) -> Response:
        _begin(request)
        body = await request.body()
        return _answer(await service.embed(request.headers.get("authorization"), body))

    router.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
    router.add_route("/v1/completions", completions, methods=["POST"])
    router.add_route("/v1/embeddings", embeddings, methods=["POST"])
    return router


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
