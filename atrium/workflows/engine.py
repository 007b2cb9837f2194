"""The workflow engine on DBOS: the walk is the durable workflow, each side-effecting
block a checkpointed step.

DBOS keeps one registry and one system database per process (it is built that way), so
:class:`DbosProcess` launches it once and counts the engines using it. The workflow
function lives on :class:`EngineBinding`, a DBOS configured instance named after the
engine, so a run recovered after a restart finds this process's engine by name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, DBOSConfiguredInstance, SetWorkflowID, WorkflowHandleAsync
from dbos import error as dbos_errors

from atrium.bus.base import Event
from atrium.bus.events import WorkflowBlockFinished, WorkflowRunFinished, WorkflowRunStarted
from atrium.core.durable import DbosProcess, forget_instance
from atrium.core.errors import AtriumError, ConflictError, InvalidRequestError
from atrium.core.spans import SpanFactory, no_span
from atrium.observability.metrics import WorkflowMetrics
from atrium.observability.propagation import current_traceparent
from atrium.workflows._execution import (
    APPROVAL_TOPIC,
    BlockFailureError,
    RunExecution,
    RunFailedError,
)
from atrium.workflows.blocks.base import BlockContext, BlockRegistry, BlockServices
from atrium.workflows.dsl import parse_workflow
from atrium.workflows.graph import CompiledNode, CompiledWorkflow, compile_workflow
from atrium.workflows.recorder import RunRecorder
from atrium.workflows.records import (
    NewRun,
    NodeRecord,
    NodeStatus,
    RunOutcome,
    RunRecord,
    RunStatus,
    RunStore,
    VersionRef,
)
from atrium.workflows.walk import (
    check_inputs,
    with_defaults,
)

log = logging.getLogger("atrium.workflows")

QUEUE_NAME = "atrium-workflows"
_DBOS_ENDED = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How the engine runs (from ``settings.workflows``)."""

    system_database_url: str
    executor_id: str
    engine_name: str = "atrium"
    queue_concurrency: int = 8
    queue_polling_seconds: float = 0.5
    listen_queue: bool = True
    flush_seconds: float = 0.1


@DBOS.dbos_class()
class EngineBinding(DBOSConfiguredInstance):
    """DBOS's handle on one engine: the durable workflow function lives here."""

    def __init__(self, engine: WorkflowEngine, name: str) -> None:
        self.engine = engine
        super().__init__(config_name=name)

    @DBOS.workflow(name="atrium.workflow_run")
    async def execute(
        self,
        run_id: str,
        version_id: str,
        inputs: dict[str, Any],
        key_id: str,
        trace: str | None = None,
    ) -> dict[str, Any]:
        """One run: the deterministic walk, every side effect a step.

        ``trace`` is the ``traceparent`` of the request that started the run (recorded
        with the arguments, so a run recovered elsewhere still links back to it).
        """
        return await self.engine.execute(run_id, version_id, inputs, key_id, trace)


class WorkflowEngine:
    """Runs workflows durably: start, wait, cancel, approve; recovers after crashes."""

    def __init__(
        self,
        *,
        config: EngineConfig,
        registry: BlockRegistry,
        services: BlockServices,
        store: RunStore,
        recorder: RunRecorder,
        publish: Callable[[Event], object] | None = None,
        span: SpanFactory = no_span,
        metrics: WorkflowMetrics | None = None,
    ) -> None:
        self._publish = publish
        self._metrics = metrics
        self.span = span  # one span per run and per block (Tracing.span when tracing is on)
        self._config = config
        self._registry = registry
        self._services = services
        self._store = store
        self._recorder = recorder
        self._graphs: dict[str, CompiledWorkflow] = {}
        self._versions: dict[str, VersionRef] = {}
        self._binding: EngineBinding | None = None
        # Handles of runs started here and not yet ended: waiting on one needs no polling.
        self._local: dict[str, WorkflowHandleAsync[Any]] = {}

    @property
    def store(self) -> RunStore:
        """Where runs and block records are kept."""
        return self._store

    @property
    def binding(self) -> EngineBinding:
        """The DBOS binding the durable workflow function lives on (while running)."""
        return self._bound()

    @property
    def config(self) -> EngineConfig:
        """How this engine runs."""
        return self._config

    @property
    def registry(self) -> BlockRegistry:
        """The block types this engine runs."""
        return self._registry

    @property
    def recorder(self) -> RunRecorder:
        """Where block records and live events go."""
        return self._recorder

    async def start(self, also_bind: Sequence[Callable[[], object]] = ()) -> None:
        """Bind to DBOS and launch it (recovering this executor's unfinished runs).

        ``also_bind`` registers other DBOS instances of this process (the release
        pipeline) between DBOS's creation and its launch, so their runs recover too.
        """
        first = DbosProcess.acquire(self._config.system_database_url, self._config.executor_id)
        for bind in also_bind:
            bind()
        try:
            self._binding = EngineBinding(self, self._config.engine_name)
        except Exception:  # noqa: BLE001 - DBOS raises a bare Exception for a second instance
            await asyncio.to_thread(DbosProcess.release)
            msg = (
                f"a workflow engine named {self._config.engine_name!r} already runs in this "
                "process (one per process); set workflows.enabled to false for the others"
            )
            raise InvalidRequestError(msg, param="workflows.enabled") from None
        if first:
            if not self._config.listen_queue:
                DBOS.listen_queues([])  # an API-only replica starts runs but takes none
            DbosProcess.launch()
            await DBOS.register_queue_async(
                QUEUE_NAME,
                worker_concurrency=self._config.queue_concurrency,
                polling_interval_sec=self._config.queue_polling_seconds,
            )
        await self._recorder.start()

    async def close(self) -> None:
        """Flush records, unbind, and let DBOS go when no engine needs it."""
        await self._recorder.close()
        if self._binding is not None:
            forget_instance(self._binding)
            self._binding = None
            await asyncio.to_thread(DbosProcess.release)
            # DBOS makes its own thread pool the loop's default executor, and shuts that
            # pool down on destroy; the rest of the process still needs one.
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(thread_name_prefix="asyncio")
            )

    # -- submitting and controlling runs ------------------------------------------------

    def compile(self, version: VersionRef) -> CompiledWorkflow:
        """The compiled graph of an immutable version (cached)."""
        graph = self._graphs.get(version.version_id)
        if graph is None:
            graph = compile_workflow(parse_workflow(version.definition), self._registry)
            self._graphs[version.version_id] = graph
            self._versions[version.version_id] = version
        return graph

    async def submit(self, run: NewRun, *, enqueue: bool = False) -> str:
        """Check the inputs, record the run and start it; returns the run id."""
        graph = self.compile(run.version)
        problems = check_inputs(graph, run.inputs)
        if problems:
            raise InvalidRequestError("invalid inputs: " + "; ".join(problems), param="inputs")
        inputs = with_defaults(graph, run.inputs)
        status = RunStatus.PENDING if enqueue else RunStatus.RUNNING
        await self._store.create_run(NewRun(**{**_fields(run), "inputs": inputs, "status": status}))
        binding = self._bound()
        trace = current_traceparent()  # the run's span links to the request that started it
        with SetWorkflowID(run.id):
            if enqueue:
                queue = DBOS.retrieve_queue(QUEUE_NAME)
                if queue is None:
                    msg = f"the workflow queue {QUEUE_NAME!r} is not registered"
                    raise AtriumError(msg)
                await queue.enqueue_async(
                    binding.execute, run.id, run.version.version_id, inputs, run.key_id, trace
                )
            else:
                self._local[run.id] = await DBOS.start_workflow_async(
                    binding.execute, run.id, run.version.version_id, inputs, run.key_id, trace
                )
        return run.id

    async def wait(self, run_id: str, seconds: float) -> bool:
        """Wait up to ``seconds`` for a run to end; whether it has.

        A run executing in this process is awaited directly (answered the moment it ends);
        one running elsewhere is polled in DBOS's system database.
        """
        local = self._local.get(run_id)
        if local is not None:
            try:
                await asyncio.wait_for(asyncio.shield(local.get_result()), seconds)
            except TimeoutError:
                return False
            except Exception:  # noqa: BLE001 - it ended in an error: the run's record says how
                return True
            return True
        deadline = time.monotonic() + seconds
        handle: WorkflowHandleAsync[Any] = await DBOS.retrieve_workflow_async(run_id)
        delay = 0.002
        while True:
            status = await handle.get_status()
            if status.status in _DBOS_ENDED:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

    async def cancel(self, run_id: str) -> None:
        """Cancel a run and its children; finished runs are left as they are."""
        record = await self._store.run(run_id)
        if record.status.terminal:
            msg = f"run {run_id} has already ended ({record.status.value})"
            raise ConflictError(msg)
        await DBOS.cancel_workflow_async(run_id, cancel_children=True)
        self._local.pop(run_id, None)
        for child in await self._store.children(run_id):
            if not child.status.terminal:
                await self.cancel(child.id)
        outcome = RunOutcome(RunStatus.CANCELLED, {}, "cancelled", record.tokens, record.cost_usd)
        if await self._store.finish_run(run_id, outcome):
            name, version = record.workflow_name, record.version
            self._ended(_Finished(run_id, name, version, record.key_id, outcome, None))

    async def decide(
        self, run_id: str, node_id: str, *, approved: bool, approver: str, comment: str
    ) -> None:
        """Approve or reject a run waiting on an approval block."""
        waiting = {
            n.node_id for n in await self._store.nodes(run_id) if n.status == NodeStatus.WAITING
        }
        waiting |= self._recorder.waiting(run_id)
        if node_id not in waiting:
            msg = f"run {run_id} is not waiting for approval at node {node_id!r}"
            raise ConflictError(msg)
        message = {"approved": approved, "approver": approver, "comment": comment}
        await DBOS.send_async(run_id, message, topic=APPROVAL_TOPIC + node_id)

    async def reconcile(self, record: RunRecord) -> bool:
        """End a run that DBOS knows has ended while its row says otherwise; whether it did.

        The engine's last step writes the outcome; if that write itself failed (the store
        was down), DBOS still records the workflow as ended, and this repairs the row.
        """
        if record.status.terminal:
            return False
        status = await DBOS.get_workflow_status_async(record.id)
        if status is None or status.status not in _DBOS_ENDED:
            return False
        reason = status.error or "no outcome recorded"
        outcome = RunOutcome(
            RunStatus.CANCELLED if status.status == "CANCELLED" else RunStatus.FAILED,
            {},
            f"the run ended in the engine ({status.status}): {reason}",
            record.tokens,
            record.cost_usd,
        )
        if status.status == "SUCCESS" and isinstance(status.output, dict):
            outcome = RunOutcome(
                RunStatus(status.output["status"]),
                status.output.get("outputs") or {},
                status.output.get("error"),
                record.tokens,
                record.cost_usd,
            )
        return await self._store.finish_run(record.id, outcome)

    async def resume(self, run_id: str) -> None:
        """Put an unfinished run back on the shared queue (a worker takes it over)."""
        await DBOS.resume_workflow_async(run_id, queue_name=QUEUE_NAME)

    async def pending_of(self, executor_id: str) -> list[str]:
        """Unfinished runs last owned by an executor (to take over when it is gone)."""
        statuses = await DBOS.list_workflows_async(
            status="PENDING", executor_id=executor_id, load_input=False, load_output=False
        )
        return [s.workflow_id for s in statuses]

    def _bound(self) -> EngineBinding:
        if self._binding is None:
            msg = "the workflow engine is not running"
            raise AtriumError(msg)
        return self._binding

    # -- inside the durable workflow ----------------------------------------------------

    async def execute(
        self,
        run_id: str,
        version_id: str,
        inputs: dict[str, Any],
        key_id: str,
        trace: str | None = None,
    ) -> dict[str, Any]:
        """The body of the durable workflow; its span is linked to ``trace`` when given."""
        if version_id not in self._versions:
            self.compile(await self._store.version(version_id))
        version = self._versions[version_id]
        run = RunExecution(self, run_id, self._graphs[version_id], inputs, key_id)
        self.announce(
            WorkflowRunStarted(run_id=run_id, workflow=version.workflow_name,
                               workflow_version=version.version, key_id=key_id)
        )  # fmt: skip
        started = time.monotonic()
        try:
            attributes = {"workflow.run_id": run_id, "workflow.name": version.workflow_name,
                          "workflow.version": version.version}  # fmt: skip
            links = (trace,) if trace else ()
            with self.span("workflow.run", links=links, **attributes):
                outcome = await run.walk()
        except dbos_errors.DBOSWorkflowCancelledError:
            raise
        except RunFailedError as failed:
            outcome = RunOutcome(RunStatus.FAILED, {}, str(failed), run.tokens, run.cost)
        except Exception as exc:
            log.exception("workflow run %s: engine error", run_id)
            reason = f"engine error: {type(exc).__name__}: {exc}"
            outcome = RunOutcome(RunStatus.FAILED, {}, reason, run.tokens, run.cost)
        seconds = time.monotonic() - started
        finished = _Finished(
            run_id, version.workflow_name, version.version, key_id, outcome, seconds
        )
        await DBOS.run_step_async({"name": "finish"}, self._finish, finished)
        return {"status": outcome.status.value, "outputs": outcome.outputs, "error": outcome.error}

    async def _finish(self, finished: _Finished) -> bool:
        run_id, outcome = finished.run_id, finished.outcome
        nodes = self._recorder.take(run_id)
        try:
            ended = await self._store.finish_run(run_id, outcome, nodes)
        except BaseException:
            self._recorder.give_back(nodes)
            raise
        self._recorder.finished(run_id, outcome)
        self._local.pop(run_id, None)
        if ended:
            self._ended(finished)
        return ended

    def _ended(self, finished: _Finished) -> None:
        """A run's end was recorded: count it and announce it."""
        outcome = finished.outcome
        if self._metrics is not None:
            self._metrics.run_finished(finished.workflow, outcome.status.value, finished.seconds)
        self.announce(
            WorkflowRunFinished(
                run_id=finished.run_id,
                workflow=finished.workflow,
                workflow_version=finished.version,
                status=outcome.status.value,
                key_id=finished.key_id,
                outputs=outcome.outputs,
                error=outcome.error,
                tokens=outcome.tokens,
                cost_usd=outcome.cost_usd,
            )
        )

    def announce(self, event: Event) -> None:
        """Publish ``event`` without waiting (the run never waits on the bus)."""
        if self._publish is not None:
            self._publish(event)

    def block_finished(self, record: NodeRecord) -> None:
        """A block ended: announce it (status, timing, tokens; no inputs or outputs)."""
        duration_ms = record.duration_ms
        if self._metrics is not None and duration_ms is not None:
            self._metrics.block_finished(record.block_type, record.status.value, duration_ms / 1000)
        self.announce(
            WorkflowBlockFinished(
                run_id=record.run_id,
                node_id=record.node_id,
                block_type=record.block_type,
                status=record.status.value,
                attempts=record.attempts,
                duration_ms=duration_ms,
                tokens=record.tokens,
                cost_usd=record.cost_usd,
                error=record.error,
            )
        )

    def context(self, run: RunExecution, node: CompiledNode, attempt: int) -> BlockContext:
        """What a block sees of the run."""
        return BlockContext(
            run_id=run.run_id,
            node_id=node.id,
            key_id=run.key_id,
            attempt=attempt,
            services=self._services,
            variables=run.graph.spec.variables,
            workflow_inputs=run.inputs,
            upstream=run.walk_state.succeeded,
        )

    async def child(
        self,
        run: RunExecution,
        *,
        node: CompiledNode,
        index: int,
        workflow: str,
        version: int | None,
        inputs: dict[str, Any],
    ) -> tuple[str, str, dict[str, Any]]:
        """Start one child run (sub-workflow or map item); returns (run id, version id, inputs)."""
        ref = await self._store.resolve(workflow, version)
        graph = self.compile(ref)
        problems = check_inputs(graph, inputs)
        if problems:
            raise BlockFailureError("child workflow inputs: " + "; ".join(problems))
        child_id = f"{run.run_id}.{node.id}.{index}"
        filled = with_defaults(graph, inputs)
        await self._store.create_run(
            NewRun(child_id, ref, filled, run.key_id, "parent", run.run_id, node.id)
        )
        return child_id, ref.version_id, filled


@dataclass(frozen=True, slots=True)
class _Finished:
    """How a run ended, and what its end event names."""

    run_id: str
    workflow: str
    version: int
    key_id: str
    outcome: RunOutcome
    seconds: float | None = None  # the walk's wall time here; None for a cancelled run


def _fields(run: NewRun) -> dict[str, Any]:
    return {f: getattr(run, f) for f in run.__dataclass_fields__}


__all__ = ["DbosProcess", "EngineBinding", "EngineConfig", "WorkflowEngine"]
