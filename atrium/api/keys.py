"""Admin API for API keys: create (shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.core.http import json_response, parse_body
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.keys import ApiKeyRepository, Scope


class KeyCreate(BaseModel):
    """Body of ``POST /v1/admin/keys``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    owner: str = Field("", max_length=200)
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.INFERENCE], min_length=1)
    allowed_models: list[str] | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    expires_at: datetime | None = None


def keys_router(keys: ApiKeyRepository, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/keys``; every route needs a key with the ``admin`` scope."""
    router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])

    async def admin(request: Request) -> None:
        principal = await auth.authenticate(request.headers.get("authorization"))
        principal.require(Scope.ADMIN)

    @router.post("")
    async def create_key(request: Request) -> Response:
        await admin(request)
        body = parse_body(KeyCreate, await request.body())
        new = await keys.create(**body.model_dump())
        return json_response({**new.record.to_public(), "key": new.secret}, status=201)

    @router.get("")
    async def list_keys(request: Request) -> Response:
        await admin(request)
        records = await keys.list(include_revoked=request.query_params.get("revoked") != "false")
        return json_response({"object": "list", "data": [r.to_public() for r in records]})

    @router.get("/{key_id}")
    async def get_key(key_id: str, request: Request) -> Response:
        await admin(request)
        return json_response((await keys.get(key_id)).to_public())

    @router.delete("/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> Response:
        await admin(request)
        record = await keys.revoke(key_id)
        auth.forget(key_id)
        return json_response(record.to_public())

    return router
