"""Admin API for alerts (``/v1/admin/alerts``): firing, pending and resolved, and deliveries."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from atrium.core.http import json_response
from atrium.gateway.auth import KeyAuthenticator
from atrium.observability.alerts import AlertService

PATH = "/v1/admin/alerts"


def alerts_router(service: AlertService | None, auth: KeyAuthenticator) -> APIRouter:
    """``GET /v1/admin/alerts``; needs a key with the ``admin`` scope.

    Without rules (``service`` None) every list is empty rather than a 404, so the
    console shows "no alerts" the same way. Each replica evaluates the rules itself:
    ``replica`` names the one that answered (and each alert the one that evaluated it).
    """
    router = APIRouter(tags=["admin"])

    @router.get(PATH)
    async def list_alerts(request: Request) -> Response:
        await auth.require_admin(request.headers.get("authorization"))
        if service is None:
            empty: dict[str, list[object]] = {"firing": [], "pending": [], "resolved": []}
            return json_response({"object": "alerts", **empty, "deliveries": []})
        deliveries = [d.to_public() for d in reversed(service.notifications.deliveries)]
        return json_response(
            {
                "object": "alerts",
                "replica": service.engine.replica,  # the one that answers and evaluated these
                **service.engine.snapshot(),
                "deliveries": deliveries,
            }
        )

    return router
