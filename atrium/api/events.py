"""Admin API for the event bus (``/v1/admin/events``): streams, dead letters, replay."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.bus.admin import BusAdmin
from atrium.bus.redis_streams import replay_offset
from atrium.core.errors import InvalidRequestError
from atrium.core.http import json_response, parse_body
from atrium.gateway.auth import KeyAuthenticator

PREFIX = "/v1/admin/events"
MAX_LIMIT = 1000


class ReplayBody(BaseModel):
    """Body of ``POST /v1/admin/events/replay``: ``from_id`` or ``since``, not both."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=200, description="The event type.")
    group: str = Field(min_length=1, max_length=200, description="The consumer group.")
    from_id: str | None = Field(None, max_length=64, description="Replay entries after this id.")
    since: datetime | None = Field(None, description="Replay entries from this time on.")


def events_router(bus: BusAdmin, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/events``; every route needs a key with the ``admin`` scope."""
    router = APIRouter(prefix=PREFIX, tags=["admin"])

    async def admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    @router.get("/streams")
    async def list_streams(request: Request) -> Response:
        await admin(request)
        streams = await bus.streams()
        return json_response({"object": "list", "data": [s.to_public() for s in streams]})

    @router.get("/dead-letters")
    async def list_dead_letters(request: Request) -> Response:
        await admin(request)
        letters = await bus.dead_letters(limit=_limit(request.query_params.get("limit")))
        return json_response({"object": "list", "data": [d.to_public() for d in letters]})

    @router.get("/dead-letters/{letter_id}")
    async def get_dead_letter(letter_id: str, request: Request) -> Response:
        await admin(request)
        return json_response((await bus.dead_letter(letter_id)).to_public())

    @router.post("/dead-letters/{letter_id}/retry")
    async def retry_dead_letter(letter_id: str, request: Request) -> Response:
        await admin(request)
        entry_id = await bus.retry_dead_letter(letter_id)
        return json_response({"id": letter_id, "retried": True, "entry_id": entry_id})

    @router.delete("/dead-letters/{letter_id}")
    async def delete_dead_letter(letter_id: str, request: Request) -> Response:
        await admin(request)
        await bus.delete_dead_letter(letter_id)
        return json_response({"id": letter_id, "deleted": True})

    @router.post("/replay")
    async def replay(request: Request) -> Response:
        await admin(request)
        body = parse_body(ReplayBody, await request.body())
        offset = replay_offset(body.from_id, body.since)
        await bus.replay(body.topic, body.group, offset)
        return json_response({"topic": body.topic, "group": body.group, "from_id": offset})

    return router


def _limit(raw: str | None) -> int:
    if raw is None:
        return 100
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        msg = f"limit must be a whole number from 1 to {MAX_LIMIT}"
        raise InvalidRequestError(msg, param="limit")
    return int(raw)
