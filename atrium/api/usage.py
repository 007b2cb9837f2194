"""Admin API for usage and spend, by key, team, model or day."""

from __future__ import annotations

from datetime import date
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from atrium.core.errors import InvalidRequestError
from atrium.core.http import json_response
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.keys import Scope
from atrium.store.usage import UsageRepository


class UsageQuery(BaseModel):
    """Query parameters of ``GET /v1/admin/usage``."""

    model_config = ConfigDict(extra="forbid")

    group_by: Literal["key", "team", "model", "day"] = "key"
    start: date | None = None
    end: date | None = None


def usage_router(usage: UsageRepository, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/usage``; needs a key with the ``admin`` scope."""
    router = APIRouter(prefix="/v1/admin/usage", tags=["admin"])

    @router.get("")
    async def report(request: Request) -> Response:
        principal = await auth.authenticate(request.headers.get("authorization"))
        principal.require(Scope.ADMIN)
        try:
            query = UsageQuery.model_validate(dict(request.query_params))
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            param = ".".join(str(p) for p in error["loc"]) or None
            raise InvalidRequestError(f"{error['msg']} (at '{param}')", param=param) from None
        lines = await usage.report(query.group_by, start=query.start, end=query.end)
        body = {
            "object": "list",
            "group_by": query.group_by,
            "data": [x.to_public() for x in lines],
        }
        return json_response(body)

    return router
