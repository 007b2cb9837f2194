"""Admin API for secrets: set and delete values, list names. Values are never returned."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.core.errors import NotFoundError
from atrium.core.http import json_response, parse_body
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.secrets import SecretStore


class SecretPut(BaseModel):
    """Body of ``PUT /v1/admin/secrets/{name}``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    value: str = Field(min_length=1, max_length=65_536)


def secrets_router(store: SecretStore, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/secrets``; needs a key with the ``admin`` scope."""
    router = APIRouter(prefix="/v1/admin/secrets", tags=["admin"])

    async def admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    @router.get("")
    async def list_names(request: Request) -> Response:
        await admin(request)
        names = await store.list_names()
        return json_response({"object": "list", "data": [{"name": n} for n in names]})

    @router.put("/{name}")
    async def put(name: str, request: Request) -> Response:
        await admin(request)
        body = parse_body(SecretPut, await request.body())
        await store.put(name, body.value)
        return json_response({"name": name, "object": "secret"})

    @router.delete("/{name}")
    async def delete(name: str, request: Request) -> Response:
        await admin(request)
        if not await store.delete(name):
            raise NotFoundError(f"no secret named {name!r}", param="name")
        return json_response({"name": name, "object": "secret", "deleted": True})

    return router
