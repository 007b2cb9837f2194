"""``/healthz`` (alive), ``/readyz`` (store and models ready) and ``/metrics``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response

from atrium.core.http import json_response
from atrium.gateway.auth import KeyAuthenticator
from atrium.observability.metrics import CONTENT_TYPE, GatewayMetrics
from atrium.runtime.catalog import ModelCatalog
from atrium.store import Database

log = logging.getLogger("atrium.metrics")


def health_router(
    db: Database,
    catalog: ModelCatalog,
    metrics: GatewayMetrics,
    auth: KeyAuthenticator,
    *,
    public_metrics: bool,
    refresh: Callable[[], Awaitable[None]] | None = None,
) -> APIRouter:
    """Probes (public) and metrics (an admin key unless ``public_metrics``).

    ``refresh`` runs before each scrape (the bus gauges are read from the bus then).
    """
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
        if refresh is not None:
            try:
                await refresh()
            except Exception:
                # A bus that cannot answer leaves its gauges as last read; every other
                # metric is still served (and the lag alert sees the stale values age).
                log.exception("refreshing the bus metrics failed")
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return router
