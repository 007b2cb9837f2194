"""Admin API for the audit trail (``/v1/audit``): query with filters, export, verify."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atrium.core.http import json_response, parse_data
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.audit import AuditFilter, AuditRepository, ChainHead

PREFIX = "/v1/audit"
Outcome = Literal["success", "denied", "rejected", "error"]


class VerifyQuery(BaseModel):
    """Query parameters of ``GET /v1/audit/verify``: a head seen before, to find cut rows."""

    model_config = ConfigDict(extra="forbid")

    expect_seq: int | None = Field(None, ge=1, description="A row's seq seen before.")
    expect_hash: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="That row's hash, as seen then."
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> VerifyQuery:
        if (self.expect_seq is None) != (self.expect_hash is None):
            raise ValueError("expect_seq and expect_hash go together")
        return self

    def head(self) -> ChainHead | None:
        """The expected head, if given."""
        if self.expect_seq is None or self.expect_hash is None:
            return None
        return ChainHead(self.expect_seq, self.expect_hash)


class AuditQuery(BaseModel):
    """Query parameters of ``GET /v1/audit`` and ``GET /v1/audit/export``."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(None, max_length=200, description="The caller's key id.")
    action: str | None = Field(
        None, max_length=300, description="Actions starting with this, e.g. 'DELETE /v1/admin'."
    )
    target: str | None = Field(
        None, max_length=1000, description="Targets starting with this, e.g. '/v1/admin/keys/'."
    )
    outcome: Outcome | None = Field(None, description="Only entries with this outcome.")
    since: datetime | None = Field(None, description="Entries at or after this time.")
    until: datetime | None = Field(None, description="Entries before this time.")
    after: int = Field(0, ge=0, description="Entries after this seq (the next page).")
    before: int | None = Field(None, ge=1, description="Entries before this seq.")
    order: Literal["oldest", "newest"] = Field(
        "oldest", description="'newest' lists newest first (page on with before)."
    )
    limit: int = Field(100, ge=1, le=1000)

    def to_filter(self) -> AuditFilter:
        """The store's filter."""
        return AuditFilter(
            actor=self.actor, action=self.action, target=self.target, outcome=self.outcome,
            since=self.since, until=self.until,
            after_seq=self.after, limit=self.limit, before_seq=self.before,
            newest_first=self.order == "newest",
        )  # fmt: skip


def audit_router(repo: AuditRepository, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/audit``; every route needs a key with the ``admin`` scope."""
    router = APIRouter(prefix=PREFIX, tags=["admin"])

    async def admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    @router.get("")
    async def list_entries(request: Request) -> Response:
        await admin(request)
        query = parse_data(AuditQuery, dict(request.query_params))
        entries = await repo.query(query.to_filter())
        return json_response({"object": "list", "data": [e.to_public() for e in entries]})

    @router.get("/export")
    async def export(request: Request) -> Response:
        await admin(request)
        query = parse_data(AuditQuery, dict(request.query_params))

        async def lines() -> AsyncIterator[bytes]:
            async for entry in repo.export(query.to_filter()):
                yield orjson.dumps(entry.to_public()) + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @router.get("/verify")
    async def verify(request: Request) -> Response:
        await admin(request)
        query = parse_data(VerifyQuery, dict(request.query_params))
        return json_response((await repo.verify(query.head())).to_public())

    return router
