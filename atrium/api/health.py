"""``/healthz`` (alive), ``/readyz`` (store and models ready) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from atrium.core.http import json_response
from atrium.gateway.auth import KeyAuthenticator
from atrium.observability.metrics import CONTENT_TYPE, GatewayMetrics
from atrium.runtime.catalog import ModelCatalog
from atrium.store import Database


def health_router(
    db: Database,
    catalog: ModelCatalog,
    metrics: GatewayMetrics,
    auth: KeyAuthenticator,
    *,
    public_metrics: bool,
) -> APIRouter:
    """Probes (public) and metrics (an admin key unless ``public_metrics``)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @router.get("/readyz")
    async def readyz() -> Response:
        store_ok = await db.ping()
        models = await catalog.health()
        ready = store_ok and all(h.ready for h in models.values())
        body = {
            "status": "ready" if ready else "not ready",
            "store": "ok" if store_ok else "unreachable",
            "models": {n: {"ready": h.ready, "detail": h.detail} for n, h in models.items()},
        }
        return json_response(body, status=200 if ready else 503)

    @router.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if not public_metrics:
            await auth.require_admin(request.headers.get("authorization"))
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return router
