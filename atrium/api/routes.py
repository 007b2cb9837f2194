"""Admin API for routes: list, set (applied live on every replica), remove."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from atrium.core.http import json_response, parse_json_object
from atrium.gateway.auth import KeyAuthenticator
from atrium.gateway.route_admin import RouteAdmin
from atrium.store.routes import RouteRepository


def routes_router(admin: RouteAdmin, stored: RouteRepository, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/routes``; needs a key with the ``admin`` scope."""
    router = APIRouter(prefix="/v1/admin/routes", tags=["admin"])

    async def require_admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    @router.get("")
    async def list_routes(request: Request) -> Response:
        await require_admin(request)
        routes = await stored.all()
        data = [{"name": name, **spec} for name, spec in routes.items()]
        return json_response({"object": "list", "data": data})

    @router.put("/{name}")
    async def put_route(name: str, request: Request) -> Response:
        await require_admin(request)
        spec = await admin.put(name, parse_json_object(await request.body()))
        return json_response({"name": name, **spec.model_dump(mode="json")})

    @router.delete("/{name}")
    async def delete_route(name: str, request: Request) -> Response:
        await require_admin(request)
        await admin.delete(name)
        return json_response({"name": name, "deleted": True})

    return router
