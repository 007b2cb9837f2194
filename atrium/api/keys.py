"""Admin API for API keys (create, shown once; list; revoke) and teams."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.core.errors import InvalidRequestError
from atrium.core.http import json_response, parse_body
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.keys import ApiKeyRepository, Scope
from atrium.store.teams import Team, TeamRepository


class KeyCreate(BaseModel):
    """Body of ``POST /v1/admin/keys``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    owner: str = Field("", max_length=200)
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.INFERENCE], min_length=1)
    allowed_models: list[str] | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_parallel: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, gt=0)
    budget_period: Literal["day", "month", "total"] | None = None
    team: str | None = Field(None, min_length=1, description="The owning team's id or name.")
    expires_at: datetime | None = None
    access_groups: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Groups whose knowledge-base documents the key may read.",
    )


class TeamCreate(BaseModel):
    """Body of ``POST /v1/admin/teams``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_parallel: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, gt=0)
    budget_period: Literal["day", "month", "total"] | None = None


async def _team(teams: TeamRepository, id_or_name: str | None) -> Team | None:
    if id_or_name is None:
        return None
    team = await teams.find(id_or_name)
    if team is None:
        raise InvalidRequestError(f"no team {id_or_name!r}", param="team")
    return team


def teams_router(teams: TeamRepository, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/teams``; every route needs a key with the ``admin`` scope."""
    router = APIRouter(prefix="/v1/admin/teams", tags=["admin"])

    async def admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    @router.post("")
    async def create_team(request: Request) -> Response:
        await admin(request)
        body = parse_body(TeamCreate, await request.body())
        return json_response((await teams.create(**body.model_dump())).to_public(), status=201)

    @router.get("")
    async def list_teams(request: Request) -> Response:
        await admin(request)
        return json_response(
            {"object": "list", "data": [t.to_public() for t in await teams.list()]}
        )

    @router.get("/{team_id}")
    async def get_team(team_id: str, request: Request) -> Response:
        await admin(request)
        return json_response((await teams.get(team_id)).to_public())

    return router


def keys_router(keys: ApiKeyRepository, teams: TeamRepository, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/keys``; every route needs a key with the ``admin`` scope."""
    router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])

    async def admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    @router.post("")
    async def create_key(request: Request) -> Response:
        await admin(request)
        body = parse_body(KeyCreate, await request.body())
        fields = body.model_dump(exclude={"team"})
        new = await keys.create(**fields, team=await _team(teams, body.team))
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
