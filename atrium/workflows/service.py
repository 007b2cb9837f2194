"""WorkflowService: what the API and the CLI call. Definitions, versions, runs, approvals."""

from __future__ import annotations

import asyncio
import difflib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.store.workflows import VersionInfo, WorkflowRecord, WorkflowRepository
from atrium.workflows.adapters import FsspecArtifacts
from atrium.workflows.dsl import WorkflowSpec, dump_yaml, load_yaml, parse_workflow
from atrium.workflows.engine import WorkflowEngine
from atrium.workflows.graph import WorkflowValidationError, compile_workflow
from atrium.workflows.records import NewRun, NodeRecord, RunRecord, VersionRef
from atrium.workflows.walk import check_inputs

_POLL_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A request to run a workflow."""

    workflow: str
    inputs: dict[str, Any]
    key_id: str
    version: int | None = None
    wait: bool = True
    timeout: float | None = None
    trigger: str = "api"


@dataclass(frozen=True, slots=True)
class RunFile:
    """A document uploaded with a run request, for the input named ``input``."""

    input: str
    name: str
    data: bytes
    media_type: str


def new_run_id() -> str:
    """A fresh run id."""
    return f"run_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of a run listing, and whether older runs follow it."""

    runs: list[RunRecord]
    has_more: bool

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's list shape: ``data``, ``first_id``, ``last_id``, ``has_more``."""
        return {
            "object": "list",
            "data": [r.as_dict() for r in self.runs],
            "first_id": self.runs[0].id if self.runs else None,
            "last_id": self.runs[-1].id if self.runs else None,
            "has_more": self.has_more,
        }


class WorkflowService:
    """Saved workflows and their runs, over the repository and the durable engine."""

    def __init__(
        self,
        repo: WorkflowRepository,
        engine: WorkflowEngine,
        artifacts: FsspecArtifacts,
        *,
        sync_timeout: float,
        max_inputs_bytes: int,
        max_file_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self._repo = repo
        self._engine = engine
        self._artifacts = artifacts
        self._sync_timeout = sync_timeout
        self._max_inputs_bytes = max_inputs_bytes

    @property
    def repo(self) -> WorkflowRepository:
        """The store of workflows and runs."""
        return self._repo

    @property
    def engine(self) -> WorkflowEngine:
        """The engine running this service's workflows."""
        return self._engine

    # -- definitions ------------------------------------------------------------------------

    def validate(self, definition: Any) -> WorkflowSpec:
        """Parse and validate a definition; every problem in one 400."""
        spec = parse_workflow(definition)
        compile_workflow(spec, self._engine.registry)
        return spec

    def ports(self, block_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """A block's typed ports and control handles for a config (the builder's handles)."""
        block = self._engine.registry.get(block_type)
        if block is None:
            raise NotFoundError(f"there is no block type {block_type!r}", param="type")
        return block.ports(config)

    def problems(self, definition: Any) -> list[dict[str, Any]]:
        """Every problem of a definition (empty when valid), for the builder's live checks."""
        try:
            self.validate(definition)
        except WorkflowValidationError as exc:
            return [p.as_dict() for p in exc.problems]
        except InvalidRequestError as exc:
            return [{"node": None, "field": "definition", "message": exc.message}]
        return []

    def problems_yaml(self, text: str) -> list[dict[str, Any]]:
        """Every problem of a YAML definition."""
        try:
            spec = load_yaml(text)
        except InvalidRequestError as exc:
            return [{"node": None, "field": "definition", "message": exc.message}]
        return self.problems(spec.model_dump(mode="json"))

    async def create(self, definition: Any, *, created_by: str | None) -> WorkflowRecord:
        """Save a new workflow (its first draft)."""
        spec = self.validate(definition)
        return await self._repo.create_workflow(
            spec.name, spec.description, spec.model_dump(mode="json"), created_by
        )

    async def import_yaml(self, text: str, *, created_by: str | None) -> WorkflowRecord:
        """Create a workflow from YAML, or replace the draft of the one with that name."""
        spec = load_yaml(text)
        compile_workflow(spec, self._engine.registry)
        data = spec.model_dump(mode="json")
        try:
            await self._repo.get_workflow(spec.name)
        except NotFoundError:
            return await self._repo.create_workflow(spec.name, spec.description, data, created_by)
        return await self._repo.update_draft(spec.name, data, spec.description)

    async def update(self, workflow: str, definition: Any) -> WorkflowRecord:
        """Replace a workflow's draft (published versions never change)."""
        current = await self._repo.get_workflow(workflow)
        spec = self.validate(definition)
        if spec.name != current.name:
            msg = (
                f"the definition's name {spec.name!r} differs from the workflow's {current.name!r}"
            )
            raise InvalidRequestError(msg, param="name")
        return await self._repo.update_draft(
            workflow, spec.model_dump(mode="json"), spec.description
        )

    async def get(self, workflow: str) -> WorkflowRecord:
        """A workflow by id or name."""
        return await self._repo.get_workflow(workflow)

    async def list_all(self) -> list[WorkflowRecord]:
        """Every workflow."""
        return await self._repo.list_workflows()

    async def delete(self, workflow: str) -> None:
        """Delete a workflow with its versions, triggers and finished runs."""
        await self._repo.delete_workflow(workflow)

    async def publish(self, workflow: str, *, note: str, created_by: str | None) -> VersionRef:
        """Freeze the draft as the next version; new runs use it."""
        record = await self._repo.get_workflow(workflow)
        if record.draft is None:
            msg = f"workflow {record.name!r} has no draft to publish"
            raise InvalidRequestError(msg)
        self.validate(record.draft)
        return await self._repo.publish(workflow, note=note, created_by=created_by)

    async def versions(self, workflow: str) -> list[VersionInfo]:
        """Published versions, newest first."""
        return await self._repo.versions(workflow)

    async def version(self, workflow: str, version: int) -> VersionRef:
        """One published version."""
        return await self._repo.version_by_number(workflow, version)

    async def export_yaml(self, workflow: str, version: int | None) -> str:
        """YAML of a version (or of the draft when ``version`` is None)."""
        return dump_yaml(parse_workflow(await self._definition(workflow, version)))

    async def diff(self, workflow: str, old: int | None, new: int | None) -> dict[str, Any]:
        """What changed between two versions (None: the draft): by node, edge and field."""
        before = parse_workflow(await self._definition(workflow, old))
        after = parse_workflow(await self._definition(workflow, new))
        return {
            "from": old,
            "to": new,
            **_structural_diff(before, after),
            "unified": "".join(
                difflib.unified_diff(
                    dump_yaml(before).splitlines(keepends=True),
                    dump_yaml(after).splitlines(keepends=True),
                    fromfile=f"v{old}" if old else "draft",
                    tofile=f"v{new}" if new else "draft",
                )
            ),
        }

    async def _definition(self, workflow: str, version: int | None) -> dict[str, Any]:
        if version is not None:
            return (await self._repo.version_by_number(workflow, version)).definition
        record = await self._repo.get_workflow(workflow)
        if record.draft is None:
            msg = f"workflow {record.name!r} has no draft"
            raise NotFoundError(msg)
        return record.draft

    # -- runs -------------------------------------------------------------------------------

    async def run(self, request: RunRequest, files: list[RunFile] | None = None) -> RunRecord:
        """Start a run; with ``wait``, answer when it ends or the timeout passes.

        ``files`` are uploaded documents: each is stored as an artifact of the new run and
        given to the input of its name as ``{"artifact": {"run_id", "name"}}``, which the
        Analyze Document block reads. They are checked with the inputs, before anything is
        stored, and removed again if the run cannot start.
        """
        if len(orjson.dumps(request.inputs)) > self._max_inputs_bytes:
            msg = f"inputs are over {self._max_inputs_bytes} bytes"
            raise InvalidRequestError(msg, param="inputs")
        version = await self._repo.resolve(request.workflow, request.version)
        run_id = new_run_id()
        inputs = dict(request.inputs)
        for file in files or []:
            if file.input in inputs:
                msg = f"input {file.input!r} is given both as a value and as a file"
                raise InvalidRequestError(msg, param=file.input)
            inputs[file.input] = {"artifact": {"run_id": run_id, "name": file.name}}
        problems = check_inputs(self._engine.compile(version), inputs)
        if problems:
            raise InvalidRequestError("invalid inputs: " + "; ".join(problems), param="inputs")
        run = NewRun(run_id, version, inputs, request.key_id, request.trigger)
        for file in files or []:
            await self._artifacts.put(run_id, file.name, file.data, file.media_type)
        try:
            await self._engine.submit(run)
        except BaseException:
            if files:
                await self._artifacts.remove(run_id)
            raise
        if request.wait:
            timeout = min(request.timeout or self._sync_timeout, self._sync_timeout)
            await self._engine.wait(run.id, timeout)
        return await self._repo.run(run.id)

    async def get_run(self, run_id: str) -> RunRecord:
        """A run by id (repaired first if the engine ended it without recording how)."""
        record = await self._repo.run(run_id)
        if not record.status.terminal and await self._engine.reconcile(record):
            record = await self._repo.run(run_id)
        return record

    async def nodes(self, run_id: str) -> list[NodeRecord]:
        """A run's block history (flushed records)."""
        await self._repo.run(run_id)
        await self._engine.recorder.flush(run_id)
        return await self._repo.nodes(run_id)

    async def list_runs(
        self,
        workflow: str | None,
        status: str | None,
        limit: int,
        before: str | None,
        key_id: str | None = None,
    ) -> RunPage:
        """A page of runs, newest first (only ``key_id``'s when given); ``before`` is the
        id of the last run of the previous page (400 when there is no such run)."""
        runs = await self._repo.list_runs(workflow, status, limit + 1, before, key_id=key_id)
        return RunPage(runs[:limit], has_more=len(runs) > limit)

    async def artifact(self, run_id: str, name: str) -> tuple[bytes, str]:
        """A file a run produced."""
        await self._repo.run(run_id)
        return await self._artifacts.get(run_id, name)

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run that has not ended."""
        await self._engine.cancel(run_id)
        return await self._repo.run(run_id)

    async def decide(
        self, run_id: str, node_id: str, *, approved: bool, approver: str, comment: str
    ) -> RunRecord:
        """Approve or reject a waiting approval block."""
        await self._repo.run(run_id)
        await self._engine.decide(
            run_id, node_id, approved=approved, approver=approver, comment=comment
        )
        return await self._repo.run(run_id)

    async def events(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """The run's events: its block records so far, then live changes, then its end.

        Live events come straight from the engine when the run executes in this process;
        otherwise (another worker runs it) the store is polled.
        """
        seen: dict[str, str] = {}
        async with self._engine.recorder.watch(run_id) as live:
            while True:
                run = await self._repo.run(run_id)
                for record in await self.nodes(run_id):
                    stamp = f"{record.status.value}:{record.attempts}"
                    if seen.get(record.node_id) != stamp:
                        seen[record.node_id] = stamp
                        yield {
                            "event": f"node.{record.status.value}",
                            "run_id": run_id,
                            "node": record.as_dict(),
                        }
                if run.status.terminal:
                    yield {
                        "event": f"run.{run.status.value}",
                        "run_id": run_id,
                        "run": run.as_dict(),
                    }
                    return
                try:
                    event = await asyncio.wait_for(live.get(), _POLL_SECONDS)
                except TimeoutError:
                    continue
                node = event.get("node")
                if node is not None:
                    seen[node["node_id"]] = f"{node['status']}:{node['attempts']}"
                    yield event


def _structural_diff(before: WorkflowSpec, after: WorkflowSpec) -> dict[str, Any]:
    old_nodes = {n.id: n.model_dump(mode="json") for n in before.nodes}
    new_nodes = {n.id: n.model_dump(mode="json") for n in after.nodes}
    changed = {}
    for node_id in sorted(old_nodes.keys() & new_nodes.keys()):
        fields = sorted(
            k
            for k in old_nodes[node_id].keys() | new_nodes[node_id].keys()
            if old_nodes[node_id].get(k) != new_nodes[node_id].get(k) and k != "position"
        )
        if fields:
            changed[node_id] = fields
    old_edges = {_edge_key(e.model_dump()) for e in before.edges}
    new_edges = {_edge_key(e.model_dump()) for e in after.edges}
    meta = ("name", "description", "inputs", "outputs", "variables", "tags")
    return {
        "nodes_added": sorted(new_nodes.keys() - old_nodes.keys()),
        "nodes_removed": sorted(old_nodes.keys() - new_nodes.keys()),
        "nodes_changed": changed,
        "edges_added": sorted(new_edges - old_edges),
        "edges_removed": sorted(old_edges - new_edges),
        "fields_changed": [f for f in meta if getattr(before, f) != getattr(after, f)],
    }


def _edge_key(edge: dict[str, Any]) -> str:
    target = (
        f"{edge['target']}.{edge['target_handle']}" if edge["target_handle"] else edge["target"]
    )
    return f"{edge['source']}.{edge['source_handle']} -> {target}"
