"""Admin API for routes: list, set (applied live on every replica), remove."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from atrium.core.errors import InvalidRequestError
from atrium.core.http import json_response
from atrium.gateway.auth import KeyAuthenticator
from atrium.gateway.route_admin import RouteAdmin
from atrium.store.keys import Scope
from atrium.store.routes import RouteRepository


def routes_router(admin: RouteAdmin, stored: RouteRepository, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/routes``; needs a key with the ``admin`` scope."""
    router = APIRouter(prefix="/v1/admin/routes", tags=["admin"])

    async def require_admin(request: Request) -> None:
        principal = await auth.authenticate(request.headers.get("authorization"))
        principal.require(Scope.ADMIN)

    @router.get("")
    async def list_routes(request: Request) -> Response:
        await require_admin(request)
        routes = await stored.all()
        data = [{"name": name, **spec} for name, spec in routes.items()]
        return json_response({"object": "list", "data": data})

    @router.put("/{name}")
    async def put_route(name: str, request: Request) -> Response:
        await require_admin(request)
        spec = await admin.put(name, _json_object(await request.body()))
        return json_response({"name": name, **spec.model_dump(mode="json")})

    @router.delete("/{name}")
    async def delete_route(name: str, request: Request) -> Response:
        await require_admin(request)
        await admin.delete(name)
        return json_response({"name": name, "deleted": True})

    return router


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return parsed
