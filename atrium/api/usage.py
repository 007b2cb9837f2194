"""Admin API for usage and spend, by key, team, user (key owner), model or day."""

from __future__ import annotations

from datetime import date
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.core.http import json_response, parse_data
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.usage import UsageRepository


class UsageQuery(BaseModel):
    """Query parameters of ``GET /v1/admin/usage``."""

    model_config = ConfigDict(extra="forbid")

    group_by: Literal["key", "team", "user", "model", "day"] = "key"
    start: date | None = None
    end: date | None = None
    per_day: bool = Field(False, description="One line per group and day (each with its day).")


def usage_router(usage: UsageRepository, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/usage``; needs a key with the ``admin`` scope."""
    router = APIRouter(prefix="/v1/admin/usage", tags=["admin"])

    @router.get("")
    async def report(request: Request) -> Response:
        await auth.require_admin(request.headers.get("authorization"))
        query = parse_data(UsageQuery, dict(request.query_params))
        lines = await usage.report(
            query.group_by, start=query.start, end=query.end, per_day=query.per_day
        )
        body = {
            "object": "list",
            "group_by": query.group_by,
            "per_day": query.per_day,
            "data": [x.to_public() for x in lines],
        }
        return json_response(body)

    return router
