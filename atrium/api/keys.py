"""Admin API for API keys (create, shown once; list; change; revoke) and teams."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.bus.base import Event
from atrium.bus.events import KeyCreated
from atrium.core.errors import InvalidRequestError
from atrium.core.http import json_response, parse_body
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.keys import ApiKey, ApiKeyRepository, Scope
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
    cache: bool | None = Field(
        None,
        description="Response cache: true caches by default, false never, null follows "
        "cache.by_default.",
    )


class KeyUpdate(BaseModel):
    """Body of ``PATCH /v1/admin/keys/{key_id}``: the fields that may change.

    Fields left out keep their value; at least one must be given.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    cache: bool | None = Field(None, description="true, false, or null (follow cache.by_default).")
    team: str | None = Field(
        None, min_length=1, description="The team's id or name to move the key to; null: none."
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


class TeamUpdate(BaseModel):
    """Body of ``PATCH /v1/admin/teams/{team_id}``: the limits and budget to change.

    Fields left out keep their value; null removes a limit or the budget.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

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

    @router.patch("/{team_id}")
    async def update_team(team_id: str, request: Request) -> Response:
        await admin(request)
        body = parse_body(TeamUpdate, await request.body())
        if not body.model_fields_set:
            raise InvalidRequestError("name at least one field to change")
        team = await teams.update(team_id, body.model_dump(include=body.model_fields_set))
        # Every replica's cached keys carry the old team: they drop them now, not at expiry.
        auth.forget_team(team.id)
        return json_response(team.to_public())

    return router


def key_created(record: ApiKey) -> KeyCreated:
    """The ``key.created`` event of a new key (the admin API's and ``atrium keys create``'s)."""
    return KeyCreated(
        key_id=record.id,
        name=record.name,
        owner=record.owner,
        scopes=sorted(scope.value for scope in record.scopes),
        team_id=record.team.id if record.team is not None else None,
        expires_at=record.expires_at,
    )


def keys_router(
    keys: ApiKeyRepository,
    teams: TeamRepository,
    auth: KeyAuthenticator,
    publish: Callable[[Event], object] | None = None,
) -> APIRouter:
    """``/v1/admin/keys``; every route needs a key with the ``admin`` scope.

    ``publish`` (``EventPublisher.publish_urgent``) announces each new key (``key.created``).
    """
    router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])

    async def admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    @router.post("")
    async def create_key(request: Request) -> Response:
        await admin(request)
        body = parse_body(KeyCreate, await request.body())
        fields = body.model_dump(exclude={"team"})
        new = await keys.create(**fields, team=await _team(teams, body.team))
        if publish is not None:
            publish(key_created(new.record))
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

    @router.patch("/{key_id}")
    async def update_key(key_id: str, request: Request) -> Response:
        await admin(request)
        body = parse_body(KeyUpdate, await request.body())
        if not body.model_fields_set:
            raise InvalidRequestError("name at least one field to change")
        record = await keys.get(key_id)
        if "team" in body.model_fields_set:
            record = await keys.set_team(key_id, await _team(teams, body.team))
        if "cache" in body.model_fields_set:
            record = await keys.set_cache(key_id, body.cache)
        # Every replica's cached copy has the old values: it drops it now, not at expiry.
        auth.forget(key_id)
        return json_response(record.to_public())

    @router.delete("/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> Response:
        await admin(request)
        record = await keys.revoke(key_id)
        auth.forget(key_id)
        return json_response(record.to_public())

    return router
