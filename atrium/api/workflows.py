"""``/v1/workflows``: definitions, versions, runs, approvals, live run events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from atrium.core.errors import AtriumError, InvalidRequestError, NotFoundError
from atrium.core.http import json_response, parse_body, parse_data, parse_json_object
from atrium.gateway.auth import KeyAuthenticator, Principal
from atrium.rag.parsers import is_supported
from atrium.store.keys import Scope
from atrium.store.workflows import TriggerRecord, WorkflowRecord
from atrium.workflows.dsl import workflow_json_schema
from atrium.workflows.records import RunRecord, VersionRef
from atrium.workflows.service import RunFile, RunRequest, WorkflowService
from atrium.workflows.templates import TemplateInstaller, TemplateInstantiate, TemplateLibrary
from atrium.workflows.triggers import TriggerService

HOOKS_PREFIX = "/v1/hooks/workflows"
#: Where runs start: a form with documents may be larger than a JSON body.
RUNS_PATH = re.compile(r"/v1/workflows/[^/]+/runs")
MAX_RUN_FILES = 8
#: Blocks in one ``POST /v1/workflows/ports/batch`` (a canvas larger than this asks twice).
MAX_PORTS_BATCH = 500
_ARTIFACT_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class RunCreate(BaseModel):
    """Body of ``POST /v1/workflows/{workflow}/runs``."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(None, ge=1, description="Pin a version (default: published).")
    mode: Literal["sync", "async"] = Field(
        "sync", description="sync: answer when the run ends (or at the timeout); async: at once."
    )
    timeout_seconds: float | None = Field(None, gt=0, le=3600)


class Decision(BaseModel):
    """Body of ``POST /v1/workflows/runs/{run}/approvals/{node}``."""

    model_config = ConfigDict(extra="forbid")

    approved: bool
    comment: str = Field("", max_length=4000)


class PublishBody(BaseModel):
    """Body of ``POST /v1/workflows/{workflow}/publish``."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000)


class _RunQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str | None = None
    status: str | None = None
    limit: int = Field(50, ge=1, le=500)
    before: str | None = Field(None, min_length=1, max_length=64, description="A run id.")


class _DiffQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    old: int | None = Field(None, alias="from", ge=1)
    new: int | None = Field(None, alias="to", ge=1)


class _VersionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1)


def workflow_public(record: WorkflowRecord) -> dict[str, Any]:
    """A workflow as the API shows it."""
    return {
        "id": record.id,
        "object": "workflow",
        "name": record.name,
        "description": record.description,
        "published_version": record.published_version,
        "draft": record.draft,
        "created_by": record.created_by,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def version_public(ref: VersionRef) -> dict[str, Any]:
    """A published version as the API shows it."""
    return {
        "id": ref.version_id,
        "object": "workflow.version",
        "workflow_id": ref.workflow_id,
        "workflow": ref.workflow_name,
        "version": ref.version,
        "definition": ref.definition,
    }


def trigger_public(record: TriggerRecord) -> dict[str, Any]:
    """A trigger as the API shows it (the webhook URL for webhooks)."""
    config = {k: v for k, v in record.config.items() if k != "key_id"}
    out: dict[str, Any] = {
        "id": record.id,
        "object": "workflow.trigger",
        "workflow_id": record.workflow_id,
        "kind": record.kind,
        "config": config,
        "enabled": record.enabled,
        "next_fire_at": record.next_fire_at.isoformat() if record.next_fire_at else None,
        "last_fired_at": record.last_fired_at.isoformat() if record.last_fired_at else None,
    }
    if record.kind == "webhook":
        out["url"] = f"{HOOKS_PREFIX}/{record.id}"
    return out


def hooks_router(triggers: TriggerService) -> APIRouter:
    """``/v1/hooks/workflows/{trigger}``: public, authenticated by the sender's signature."""
    router = APIRouter(prefix=HOOKS_PREFIX, tags=["workflows"])

    @router.post("/{trigger_id}")
    async def deliver(trigger_id: str, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        run_id = await triggers.deliver(trigger_id, await request.body(), headers)
        return json_response({"object": "workflow.run", "id": run_id, "status": "accepted"}, 202)

    return router


class _Access:
    """Who may do what: admins manage definitions and triggers; keys run and see their runs."""

    def __init__(self, service: WorkflowService, auth: KeyAuthenticator) -> None:
        self._service = service
        self._auth = auth

    async def admin(self, request: Request) -> Principal:
        return await self._auth.require_admin(request.headers.get("authorization"))

    async def user(self, request: Request) -> Principal:
        return await self._auth.require(request.headers.get("authorization"), Scope.INFERENCE)

    async def own_run(self, run_id: str, request: Request) -> tuple[RunRecord, Principal]:
        principal = await self.user(request)
        run = await self._service.get_run(run_id)
        if Scope.ADMIN not in principal.key.scopes and run.key_id != principal.key_id:
            # Someone else's run does not exist, as far as this key can tell.
            msg = f"no run {run_id!r}"
            raise NotFoundError(msg)
        return run, principal


async def _definition_of(request: Request) -> Any:
    body = await request.body()
    if request.headers.get("content-type", "").split(";")[0].strip() in YAML_TYPES:
        return body.decode("utf-8", errors="replace")
    return parse_json_object(body)


def workflows_router(
    service: WorkflowService, triggers: TriggerService, auth: KeyAuthenticator
) -> APIRouter:
    """``/v1/workflows``: runs first (their paths must win over ``/{workflow}``)."""
    router = APIRouter(prefix="/v1/workflows", tags=["workflows"])
    access = _Access(service, auth)
    _catalogue_routes(router, service, access)
    installer = TemplateInstaller(TemplateLibrary.bundled(), service, triggers)
    _template_routes(router, installer, access)
    _run_routes(router, service, access)
    _trigger_routes(router, triggers, access)
    _definition_routes(router, service, access)
    return router


class PortsRequest(BaseModel):
    """Body of ``POST /v1/workflows/ports``: a block type and a config."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100)
    config: dict[str, Any] = Field(default_factory=dict)


class PortsBatchRequest(BaseModel):
    """Body of ``POST /v1/workflows/ports/batch``: many blocks at once (a whole canvas)."""

    model_config = ConfigDict(extra="forbid")

    blocks: list[PortsRequest] = Field(max_length=MAX_PORTS_BATCH)


def _ports_or_error(service: WorkflowService, item: PortsRequest) -> dict[str, Any]:
    """One block's ports, or the reason its config gives none (an error per item, not a 400
    for the batch: one half-configured block must not hide the ports of the others)."""
    try:
        return service.ports(item.type, item.config)
    except AtriumError as exc:
        return {"type": item.type, **exc.to_openai()}


def _catalogue_routes(router: APIRouter, service: WorkflowService, access: _Access) -> None:
    @router.get("/blocks")
    async def blocks(request: Request) -> Response:
        await access.user(request)
        return json_response({"object": "list", "data": service.engine.registry.describe()})

    @router.get("/schema")
    async def schema(request: Request) -> Response:
        await access.user(request)
        return json_response(workflow_json_schema())

    @router.post("/ports")
    async def ports(request: Request) -> Response:
        await access.user(request)
        body = parse_body(PortsRequest, await request.body())
        return json_response(service.ports(body.type, body.config))

    @router.post("/ports/batch")
    async def ports_batch(request: Request) -> Response:
        await access.user(request)
        body = parse_body(PortsBatchRequest, await request.body())
        data = [_ports_or_error(service, item) for item in body.blocks]
        return json_response({"object": "list", "data": data})

    @router.post("/validate")
    async def validate(request: Request) -> Response:
        await access.user(request)
        definition = await _definition_of(request)
        problems = (
            service.problems_yaml(definition)
            if isinstance(definition, str)
            else service.problems(definition)
        )
        return json_response({"valid": not problems, "problems": problems})


def _template_routes(router: APIRouter, installer: TemplateInstaller, access: _Access) -> None:
    """``/templates``: before ``/{workflow}``, which would take the path for a workflow name."""

    @router.get("/templates")
    async def templates(request: Request) -> Response:
        await access.user(request)
        data = [t.summary() for t in installer.library.list()]
        return json_response({"object": "list", "data": data})

    @router.get("/templates/{template_id}")
    async def template(template_id: str, request: Request) -> Response:
        await access.user(request)
        return json_response(installer.library.get(template_id).detail())

    @router.post("/templates/{template_id}/instantiate")
    async def instantiate(template_id: str, request: Request) -> Response:
        who = await access.admin(request)
        body = parse_body(TemplateInstantiate, await request.body())
        record = await installer.install(template_id, body, key_id=who.key_id)
        return json_response(workflow_public(record), status=201)


def _run_routes(router: APIRouter, service: WorkflowService, access: _Access) -> None:
    @router.get("/runs")
    async def runs(request: Request) -> Response:
        who = await access.user(request)
        query = parse_data(_RunQuery, dict(request.query_params))
        key = None if Scope.ADMIN in who.key.scopes else who.key_id
        page = await service.list_runs(query.workflow, query.status, query.limit, query.before, key)
        return json_response(page.as_dict())

    @router.get("/runs/{run_id}")
    async def run(run_id: str, request: Request) -> Response:
        record, _ = await access.own_run(run_id, request)
        nodes = [n.as_dict() for n in await service.nodes(run_id)]
        return json_response({**record.as_dict(), "nodes": nodes})

    @router.post("/runs/{run_id}/cancel")
    async def cancel(run_id: str, request: Request) -> Response:
        await access.own_run(run_id, request)
        return json_response((await service.cancel(run_id)).as_dict())

    @router.post("/runs/{run_id}/approvals/{node_id}")
    async def decide(run_id: str, node_id: str, request: Request) -> Response:
        _, who = await access.own_run(run_id, request)
        body = parse_body(Decision, await request.body())
        record = await service.decide(
            run_id, node_id, approved=body.approved, approver=who.key_id, comment=body.comment
        )
        # Accepted: the run resumes on its own (follow it with GET or the event stream).
        return json_response(record.as_dict(), status=202)

    @router.get("/runs/{run_id}/events")
    async def events(run_id: str, request: Request) -> Response:
        await access.own_run(run_id, request)
        return StreamingResponse(_sse(service, run_id), media_type="text/event-stream")

    @router.get("/runs/{run_id}/artifacts/{name}")
    async def artifact(run_id: str, name: str, request: Request) -> Response:
        await access.own_run(run_id, request)
        data, media_type = await service.artifact(run_id, name)
        return Response(data, media_type=media_type)

    @router.post("/{workflow}/runs")
    async def start(workflow: str, request: Request) -> Response:
        who = await access.user(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            body, files = await _multipart_run(request, service.max_file_bytes)
        else:
            body, files = parse_body(RunCreate, await request.body()), []
        record = await service.run(
            RunRequest(
                workflow,
                body.inputs,
                who.key_id,
                version=body.version,
                wait=body.mode == "sync",
                timeout=body.timeout_seconds,
            ),
            files,
        )
        return json_response(record.as_dict(), status=200 if record.status.terminal else 202)


def _trigger_routes(router: APIRouter, triggers: TriggerService, access: _Access) -> None:
    @router.post("/{workflow}/triggers")
    async def add_trigger(workflow: str, request: Request) -> Response:
        who = await access.admin(request)
        record = await triggers.create(
            workflow, parse_json_object(await request.body()), who.key_id
        )
        return json_response(trigger_public(record), status=201)

    @router.get("/{workflow}/triggers")
    async def list_triggers(workflow: str, request: Request) -> Response:
        await access.admin(request)
        data = [trigger_public(t) for t in await triggers.of_workflow(workflow)]
        return json_response({"object": "list", "data": data})

    @router.delete("/triggers/{trigger_id}")
    async def delete_trigger(trigger_id: str, request: Request) -> Response:
        await access.admin(request)
        await triggers.delete(trigger_id)
        return json_response({"id": trigger_id, "object": "workflow.trigger", "deleted": True})


def _definition_routes(router: APIRouter, service: WorkflowService, access: _Access) -> None:
    @router.post("")
    async def create(request: Request) -> Response:
        who = await access.admin(request)
        definition = await _definition_of(request)
        if isinstance(definition, str):
            record = await service.import_yaml(definition, created_by=who.key_id)
        else:
            record = await service.create(definition, created_by=who.key_id)
        return json_response(workflow_public(record), status=201)

    @router.get("")
    async def list_all(request: Request) -> Response:
        await access.user(request)
        data = [workflow_public(w) for w in await service.list_all()]
        return json_response({"object": "list", "data": data})

    @router.get("/{workflow}")
    async def describe(workflow: str, request: Request) -> Response:
        await access.user(request)
        return json_response(workflow_public(await service.get(workflow)))

    @router.put("/{workflow}")
    async def update(workflow: str, request: Request) -> Response:
        await access.admin(request)
        record = await service.update(workflow, await _definition_of(request))
        return json_response(workflow_public(record))

    @router.delete("/{workflow}")
    async def delete(workflow: str, request: Request) -> Response:
        await access.admin(request)
        await service.delete(workflow)
        return json_response({"id": workflow, "object": "workflow", "deleted": True})

    @router.post("/{workflow}/publish")
    async def publish(workflow: str, request: Request) -> Response:
        who = await access.admin(request)
        body = parse_body(PublishBody, await request.body() or b"{}")
        ref = await service.publish(workflow, note=body.note, created_by=who.key_id)
        return json_response(version_public(ref), status=201)

    @router.get("/{workflow}/versions")
    async def versions(workflow: str, request: Request) -> Response:
        await access.user(request)
        data = [
            {
                "id": v.id,
                "object": "workflow.version",
                "version": v.version,
                "note": v.note,
                "created_by": v.created_by,
                "created_at": v.created_at.isoformat(),
            }
            for v in await service.versions(workflow)
        ]
        return json_response({"object": "list", "data": data})

    @router.get("/{workflow}/versions/{version}")
    async def version(workflow: str, version: int, request: Request) -> Response:
        await access.user(request)
        return json_response(version_public(await service.version(workflow, version)))

    @router.get("/{workflow}/diff")
    async def diff(workflow: str, request: Request) -> Response:
        await access.user(request)
        query = parse_data(_DiffQuery, dict(request.query_params))
        return json_response(await service.diff(workflow, query.old, query.new))

    @router.get("/{workflow}/export")
    async def export(workflow: str, request: Request) -> Response:
        await access.user(request)
        query = parse_data(_VersionQuery, dict(request.query_params))
        text = await service.export_yaml(workflow, query.version)
        return Response(text, media_type="application/yaml")


async def _multipart_run(request: Request, max_bytes: int) -> tuple[RunCreate, list[RunFile]]:
    """A run request as a form: ``inputs`` (JSON), ``mode``, ``version``, ``timeout_seconds``
    as fields, and each document as a file field named after the input it is for."""
    fields: dict[str, Any] = {}
    files: list[RunFile] = []
    async with request.form(max_files=MAX_RUN_FILES, max_fields=10) as form:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append(await _run_file(key, value, max_bytes))
            elif key == "inputs":
                fields[key] = parse_json_object(value.encode())
            else:
                fields[key] = value
    return parse_data(RunCreate, fields), files


async def _run_file(field: str, upload: UploadFile, max_bytes: int) -> RunFile:
    name = _ARTIFACT_UNSAFE.sub("_", PurePosixPath(upload.filename or "").name).lstrip("._")
    if not name or not is_supported(name, upload.content_type):
        msg = f"file {upload.filename!r} for input {field!r} is not a supported document type"
        raise InvalidRequestError(msg, param=field, code="unsupported_file_type")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        msg = f"file {upload.filename!r} is over the {max_bytes}-byte limit"
        raise InvalidRequestError(msg, param=field, code="file_too_large")
    return RunFile(field, name[:200], data, upload.content_type or "application/octet-stream")


async def _sse(service: WorkflowService, run_id: str) -> AsyncIterator[bytes]:
    async for event in service.events(run_id):
        yield (
            b"event: " + str(event["event"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        )
