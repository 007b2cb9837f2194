"""Knowledge-base API: manage knowledge bases and sources, upload, sync, query, feedback.

Managing (create, change, delete, add sources, upload, sync) and reading the feedback
given need the ``admin`` scope;
querying, searching and feedback need ``inference`` and a key in one of the knowledge
base's access groups (when it has any). A caller only ever sees chunks of its groups.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from atrium.core.errors import AtriumError, InvalidRequestError
from atrium.core.http import json_response, parse_body, parse_data, parse_json_object
from atrium.gateway.auth import KeyAuthenticator, Principal
from atrium.rag.requests import (
    Caller,
    FeedbackRequest,
    KnowledgeBaseCreate,
    QueryRequest,
    SourceCreate,
)
from atrium.rag.service import KnowledgeService
from atrium.store.keys import Scope

#: Paths that take a document upload (the body size limit is the upload limit there).
UPLOAD_PATH = re.compile(r"/v1/knowledge-bases/[^/]+/documents")


def caller_of(principal: Principal, authorization: str | None) -> Caller:
    """The RAG service's view of a verified key: administrators see every chunk."""
    key = principal.key
    groups = None if Scope.ADMIN in key.scopes else frozenset(key.access_groups)
    return Caller(key_id=key.id, groups=groups, authorization=authorization)


def knowledge_router(service: KnowledgeService, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/knowledge-bases``."""
    router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge bases"])

    async def admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    async def caller(request: Request) -> Caller:
        header = request.headers.get("authorization")
        principal = await auth.authenticate(header)
        principal.require(Scope.INFERENCE)
        return caller_of(principal, header)

    @router.post("")
    async def create(request: Request) -> Response:
        await admin(request)
        body = parse_body(KnowledgeBaseCreate, await request.body())
        return json_response(await service.create(body), status=201)

    @router.get("")
    async def list_all(request: Request) -> Response:
        who = await caller(request)
        return json_response({"object": "list", "data": await service.list_all(who)})

    @router.get("/{kb}")
    async def describe(kb: str, request: Request) -> Response:
        who = await caller(request)
        return json_response(await service.describe(kb, who))

    @router.patch("/{kb}")
    async def update(kb: str, request: Request) -> Response:
        await admin(request)
        return json_response(await service.update(kb, parse_json_object(await request.body())))

    @router.delete("/{kb}")
    async def delete(kb: str, request: Request) -> Response:
        await admin(request)
        await service.delete(kb)
        return json_response({"id": kb, "object": "knowledge_base", "deleted": True})

    @router.post("/{kb}/sources")
    async def add_source(kb: str, request: Request) -> Response:
        await admin(request)
        body = parse_body(SourceCreate, await request.body())
        return json_response(await service.add_source(kb, body), status=201)

    @router.get("/{kb}/sources")
    async def sources(kb: str, request: Request) -> Response:
        # Source configurations name paths, URLs and queries: administrators only.
        await admin(request)
        return json_response({"object": "list", "data": await service.sources(kb)})

    @router.delete("/{kb}/sources/{source}")
    async def delete_source(kb: str, source: str, request: Request) -> Response:
        await admin(request)
        await service.delete_source(kb, source)
        return json_response({"id": source, "object": "knowledge_base.source", "deleted": True})

    @router.post("/{kb}/sources/{source}/sync")
    async def sync(kb: str, source: str, request: Request) -> Response:
        await admin(request)
        return json_response(await service.sync(kb, source))

    @router.post("/{kb}/documents")
    async def upload(kb: str, request: Request) -> Response:
        await admin(request)
        filename, data = await _uploaded_file(request)
        return json_response(await service.upload(kb, filename, data), status=201)

    @router.get("/{kb}/documents")
    async def documents(kb: str, request: Request) -> Response:
        who = await caller(request)
        query = parse_data(_DocumentQuery, dict(request.query_params))
        data = await service.documents(kb, status=query.status, caller=who)
        return json_response({"object": "list", "data": data})

    @router.delete("/{kb}/documents/{document}")
    async def delete_document(kb: str, document: str, request: Request) -> Response:
        await admin(request)
        await service.delete_document(kb, document)
        return json_response({"id": document, "object": "knowledge_base.document", "deleted": True})

    @router.get("/{kb}/feedback")
    async def feedback_entries(kb: str, request: Request) -> Response:
        # Comments and questions of every reader: administrators only.
        await admin(request)
        query = parse_data(_FeedbackQuery, dict(request.query_params))
        data = await service.feedback_entries(kb, limit=query.limit)
        return json_response({"object": "list", "data": data})

    _query_routes(router, service, caller)
    return router


def _query_routes(
    router: APIRouter,
    service: KnowledgeService,
    caller: Callable[[Request], Awaitable[Caller]],
) -> None:
    @router.post("/{kb}/search")
    async def search(kb: str, request: Request) -> Response:
        who = await caller(request)
        body = parse_body(QueryRequest, await request.body())
        result = await service.search(kb, who, body)
        public = result.to_public()
        public["object"] = "knowledge_base.search"
        return json_response(public)

    @router.post("/{kb}/query")
    async def query(kb: str, request: Request) -> Response:
        who = await caller(request)
        body = parse_body(QueryRequest, await request.body())
        if body.stream:
            return StreamingResponse(
                await _answer_stream(service, kb, who, body), media_type="text/event-stream"
            )
        return json_response((await service.query(kb, who, body)).to_public())

    @router.post("/{kb}/feedback")
    async def feedback(kb: str, request: Request) -> Response:
        who = await caller(request)
        body = parse_body(FeedbackRequest, await request.body())
        feedback_id = await service.feedback(kb, who, body)
        return json_response({"id": feedback_id, "object": "knowledge_base.feedback"}, status=201)


class _FeedbackQuery(BaseModel):
    """Query parameters of ``GET .../feedback``."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=500)


class _DocumentQuery(BaseModel):
    """Query parameters of ``GET .../documents``."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["indexed", "failed"] | None = None


async def _uploaded_file(request: Request) -> tuple[str, bytes]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        msg = "upload a document as multipart/form-data with a 'file' field"
        raise InvalidRequestError(msg, param="file")
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidRequestError("the form has no 'file' field with a file", param="file")
        return upload.filename, await upload.read()


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def _answer_stream(
    service: KnowledgeService, kb: str, who: Caller, body: QueryRequest
) -> AsyncIterator[bytes]:
    """Open the answer before the response starts, so early errors are plain HTTP errors."""
    answer, deltas = await service.query_stream(kb, who, body)

    async def events() -> AsyncIterator[bytes]:
        public = answer.to_public()
        yield _event("citations", {"citations": public["citations"], "context": public["context"]})
        parts: list[str] = []
        try:
            async for text in deltas:
                parts.append(text)
                yield _event("delta", {"text": text})
        except AtriumError as exc:
            yield _event("error", exc.to_openai())
            return
        query_id = await service.finish(answer, who, body.query, "".join(parts))
        yield _event("done", {"query_id": query_id, "answer": "".join(parts)})

    return events()
