"""One execution of a run's walk inside its durable DBOS workflow.

:class:`RunExecution` turns the walk's decisions into work: pure blocks inline, side-effecting
blocks as DBOS steps started a superstep at a time (step ids drawn in topological order before
any await, so a replay matches every step to its own recorded result), and the blocks the
engine runs itself (approvals as durable messages; sub-workflows, maps and loops as child
workflows). The first execution and every replay after a crash run the same code.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dbos import DBOS, SetWorkflowID

from atrium.core.errors import AtriumError
from atrium.workflows.blocks.base import BlockError
from atrium.workflows.blocks.core import ApprovalConfig, LoopConfig, MapConfig, SubworkflowConfig
from atrium.workflows.expressions import evaluate, render, truthy
from atrium.workflows.graph import CompiledNode, CompiledWorkflow
from atrium.workflows.records import NodeRecord, NodeStatus, RunOutcome, RunStatus
from atrium.workflows.walk import (
    Ready,
    Settled,
    Walk,
    settle_failure,
    settle_success,
    workflow_outputs,
)

if TYPE_CHECKING:
    from atrium.workflows.engine import WorkflowEngine

APPROVAL_TOPIC = "approval:"


class RunFailedError(Exception):
    """A block failed under the ``fail`` strategy: the run ends failed with this reason."""


class BlockFailureError(Exception):
    """One block's attempt failed (retried, then handed to its error strategy)."""


def _now() -> datetime:
    return datetime.now(UTC)


class RunExecution:
    """One execution of the walk (the first, or a replay after a crash)."""

    def __init__(
        self,
        engine: WorkflowEngine,
        run_id: str,
        graph: CompiledWorkflow,
        inputs: dict[str, Any],
        key_id: str,
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self.graph = graph
        self.inputs = inputs
        self.key_id = key_id
        self.walk_state = Walk(graph)
        self.tokens = 0
        self.cost = 0.0
        self.recorder = engine.recorder

    async def walk(self) -> RunOutcome:
        self.recorder.started(self.run_id)
        while not self.walk_state.done:
            ready, skipped = self.walk_state.next_ready()
            for node_id in skipped:
                self._settle(
                    self.graph.nodes[node_id],
                    Settled("skipped"),
                    NodeRecord(
                        self.run_id,
                        node_id,
                        self.graph.nodes[node_id].spec.type,
                        NodeStatus.SKIPPED,
                    ),
                )
            pure = [r for r in ready if r.node.block.kind == "pure"]
            if pure:
                for item in pure:
                    await self._run_pure(item)
                continue
            if not ready:
                if skipped:
                    continue
                msg = "the walk is stuck: no node is ready"  # cannot happen on a valid graph
                raise RuntimeError(msg)
            await self._superstep(ready)
        outputs = workflow_outputs(self.graph, self.walk_state)
        return RunOutcome(RunStatus.SUCCEEDED, outputs, None, self.tokens, self.cost)

    async def _run_pure(self, item: Ready) -> None:
        node = item.node
        started = _now()
        try:
            with self._block_span(node, 1):
                result = await node.block.run(
                    self.engine.context(self, node, 1), node.config, item.inputs
                )
        except Exception as exc:  # noqa: BLE001 - a block failure follows its error strategy
            self._fail(node, item.inputs, _describe(exc), started, 1)
            return
        record = NodeRecord(
            self.run_id,
            node.id,
            node.spec.type,
            NodeStatus.SUCCEEDED,
            item.inputs,
            result.outputs,
            started_at=started,
            finished_at=_now(),
            attempts=1,
        )
        self._settle(node, settle_success(node, result.outputs, result.handles), record)

    def _block_span(self, node: CompiledNode, attempt: int) -> AbstractContextManager[Any]:
        """One span per block attempt (a child of the run's span)."""
        return self.engine.span(
            f"workflow.block {node.spec.type}",
            **{"workflow.run_id": self.run_id, "workflow.node_id": node.id,
               "workflow.block": node.spec.type, "workflow.attempt": attempt},
        )  # fmt: skip

    async def _superstep(self, ready: list[Ready]) -> None:
        """Start every ready step in topological order (stable step ids), then settle them."""
        steps = [r for r in ready if r.node.block.kind == "step"]
        engine_blocks = [r for r in ready if r.node.block.kind == "engine"]
        calls = []
        for item in steps:
            reservation = DBOS.reserve_step()  # step ids drawn in order, before any await
            self.recorder.node(
                NodeRecord(
                    self.run_id,
                    item.node.id,
                    item.node.spec.type,
                    NodeStatus.RUNNING,
                    item.inputs,
                    started_at=_now(),
                )
            )
            calls.append(
                reservation.run_async(
                    {"name": f"block:{item.node.id}"}, self._execute_step, item.node.id, item.inputs
                )
            )
        # One step (a chain) is awaited directly: no task to schedule.
        results = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        for item, outcome in zip(steps, results, strict=True):
            self._settle_step(item, outcome)
        for item in engine_blocks:
            await self._run_engine_block(item)

    async def _execute_step(self, node_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """The checkpointed step: attempts with backoff and jitter, a timeout per attempt."""
        node = self.graph.nodes[node_id]
        policy, started = node.spec.retry, _now()
        error = ""
        for attempt in range(1, policy.attempts + 1):
            try:
                async with asyncio.timeout(node.spec.timeout_seconds):
                    with self._block_span(node, attempt):
                        result = await node.block.run(
                            self.engine.context(self, node, attempt), node.config, inputs
                        )
            except TimeoutError:
                error = f"timed out after {node.spec.timeout_seconds:g} s"
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then recorded
                error = _describe(exc)
            else:
                return {
                    "ok": True,
                    "outputs": result.outputs,
                    "handles": list(result.handles) if result.handles is not None else None,
                    "tokens": result.tokens,
                    "cost": result.cost_usd,
                    "attempts": attempt,
                    "started": started.isoformat(),
                    "finished": _now().isoformat(),
                }
            if attempt < policy.attempts:
                backoff = min(
                    policy.backoff_seconds * policy.backoff_rate ** (attempt - 1),
                    policy.max_backoff_seconds,
                )
                await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 - jitter, not crypto
        return {
            "ok": False,
            "error": error,
            "attempts": policy.attempts,
            "started": started.isoformat(),
            "finished": _now().isoformat(),
            "tokens": 0,
            "cost": 0.0,
        }

    def _settle_step(self, item: Ready, outcome: dict[str, Any]) -> None:
        node = item.node
        started = datetime.fromisoformat(outcome["started"])
        finished = datetime.fromisoformat(outcome["finished"])
        self.tokens += int(outcome.get("tokens") or 0)
        self.cost += float(outcome.get("cost") or 0.0)
        if not outcome["ok"]:
            self._fail(node, item.inputs, outcome["error"], started, outcome["attempts"], finished)
            return
        handles = tuple(outcome["handles"]) if outcome["handles"] is not None else None
        record = NodeRecord(
            self.run_id,
            node.id,
            node.spec.type,
            NodeStatus.SUCCEEDED,
            item.inputs,
            outcome["outputs"],
            None,
            outcome["attempts"],
            started,
            finished,
            int(outcome["tokens"]),
            float(outcome["cost"]),
            list(handles or ()),
        )
        self._settle(node, settle_success(node, outcome["outputs"], handles), record)

    def _fail(  # noqa: PLR0917 - one record's fields
        self,
        node: CompiledNode,
        inputs: dict[str, Any],
        error: str,
        started: datetime,
        attempts: int,
        finished: datetime | None = None,
    ) -> None:
        record = NodeRecord(
            self.run_id,
            node.id,
            node.spec.type,
            NodeStatus.FAILED,
            inputs,
            {},
            error,
            attempts,
            started,
            finished or _now(),
        )
        settled = settle_failure(node, error)
        if settled is None:
            self.recorder.node(record)
            self.engine.block_finished(record)
            raise RunFailedError(f"node {node.id!r} failed: {error}")
        record.outputs = settled.outputs
        self._settle(node, settled, record)

    def _settle(self, node: CompiledNode, settled: Settled, record: NodeRecord) -> None:
        record.handles = list(settled.handles)
        self.walk_state.settle(node.id, settled)
        self.recorder.node(record)
        self.engine.block_finished(record)

    # -- engine blocks ------------------------------------------------------------------

    async def _run_engine_block(self, item: Ready) -> None:
        node = item.node
        started = _now()
        try:
            # The span covers an approval's wait and the child runs (their run spans are
            # its children when they run in this process).
            with self._block_span(node, 1):
                outputs, handles = await self._engine_block(item)
        except BlockFailureError as exc:
            self._fail(node, item.inputs, str(exc), started, 1)
            return
        record = NodeRecord(
            self.run_id,
            node.id,
            node.spec.type,
            NodeStatus.SUCCEEDED,
            item.inputs,
            outputs,
            started_at=started,
            finished_at=_now(),
            attempts=1,
        )
        self._settle(node, settle_success(node, outputs, handles), record)

    async def _engine_block(self, item: Ready) -> tuple[dict[str, Any], tuple[str, ...] | None]:
        kind = item.node.spec.type
        if kind == "approval":
            return await self._approval(item)
        if kind == "subworkflow":
            return await self._subworkflow(item)
        if kind == "map":
            return await self._map(item)
        if kind == "loop":
            return await self._loop(item)
        msg = f"no engine implementation for block {kind!r}"
        raise RuntimeError(msg)

    async def _approval(self, item: Ready) -> tuple[dict[str, Any], tuple[str, ...]]:
        node = item.node
        config = node.config
        assert isinstance(config, ApprovalConfig)
        message = render(
            config.message,
            self.engine.context(self, node, 1).template_scope(item.inputs),
        )
        self.recorder.node(
            NodeRecord(
                self.run_id,
                node.id,
                node.spec.type,
                NodeStatus.WAITING,
                item.inputs,
                {"message": message},
                started_at=_now(),
            )
        )
        await DBOS.run_step_async({"name": f"wait:{node.id}"}, self._mark_waiting, node.id)
        timeout = float(config.timeout_hours) * 3600
        decision = await DBOS.recv_async(topic=APPROVAL_TOPIC + node.id, timeout_seconds=timeout)
        await DBOS.run_step_async({"name": f"resume:{node.id}"}, self._mark_running)
        if decision is None:
            raise BlockFailureError(f"no decision within {config.timeout_hours:g} hours")
        approved = bool(decision.get("approved"))
        outputs = {
            "value": item.inputs.get("value"),
            "decision": "approved" if approved else "rejected",
            "approver": decision.get("approver"),
            "comment": decision.get("comment") or "",
            "message": message,
        }
        return outputs, ("approved" if approved else "rejected", "done")

    async def _mark_waiting(self, node_id: str) -> None:
        await self.recorder.flush(self.run_id)
        await self.engine.store.set_status(self.run_id, RunStatus.WAITING)

    async def _mark_running(self) -> None:
        await self.engine.store.set_status(self.run_id, RunStatus.RUNNING)

    async def _start_child(
        self,
        node: CompiledNode,
        index: int,
        target: SubworkflowConfig,  # or a Map or Loop config, which extend it
        inputs: dict[str, Any],
    ) -> Any:
        child_id, version_id, filled = await DBOS.run_step_async(
            {"name": f"child:{node.id}:{index}"},
            self.engine.child,
            self,
            node=node,
            index=index,
            workflow=target.workflow,
            version=target.version,
            inputs=inputs,
        )
        binding = self.engine.binding
        with SetWorkflowID(child_id):
            return await DBOS.start_workflow_async(
                binding.execute, child_id, version_id, filled, self.key_id
            )

    async def _loop(self, item: Ready) -> tuple[dict[str, Any], tuple[str, ...] | None]:
        config = item.node.config
        assert isinstance(config, LoopConfig)
        inputs = dict(item.inputs.get("inputs") or {})
        history: list[dict[str, Any]] = []
        outputs: dict[str, Any] = {}
        for iteration in range(1, config.max_iterations + 1):
            handle = await self._start_child(item.node, iteration - 1, config, inputs)
            result = await handle.get_result()
            if result["status"] != RunStatus.SUCCEEDED.value:
                raise BlockFailureError(
                    f"iteration {iteration} ({handle.workflow_id}) {result['status']}: "
                    f"{result.get('error')}"
                )
            outputs = result["outputs"]
            history.append(outputs)
            scope = {"outputs": outputs, "iteration": iteration, "inputs": inputs}
            try:
                done = truthy(evaluate(config.until, scope, config.language))
            except BlockError as exc:
                raise BlockFailureError(f"until: {exc}") from None
            if done:
                break
            if config.carry:
                inputs = {**inputs, **outputs}
        return {"outputs": outputs, "iterations": len(history), "history": history}, None

    async def _subworkflow(self, item: Ready) -> tuple[dict[str, Any], tuple[str, ...] | None]:
        config = item.node.config
        assert isinstance(config, SubworkflowConfig)
        handle = await self._start_child(
            item.node, 0, config, dict(item.inputs.get("inputs") or {})
        )
        result = await handle.get_result()
        if result["status"] != RunStatus.SUCCEEDED.value:
            raise BlockFailureError(
                f"sub-workflow {handle.workflow_id} {result['status']}: {result.get('error')}"
            )
        return {"outputs": result["outputs"], "run_id": handle.workflow_id}, None

    async def _map(self, item: Ready) -> tuple[dict[str, Any], tuple[str, ...] | None]:
        config = item.node.config
        assert isinstance(config, MapConfig)
        items = list(item.inputs.get("items") or [])
        limit = int(config.max_items)
        if len(items) > limit:
            raise BlockFailureError(f"{len(items)} items is over max_items ({limit})")
        shared = dict(item.inputs.get("inputs") or {})
        window = int(config.concurrency)
        results: list[dict[str, Any]] = []
        for offset in range(0, len(items), window):
            handles = []
            for index in range(offset, min(offset + window, len(items))):
                child_inputs = {**shared, config.item_input: items[index]}
                handles.append(await self._start_child(item.node, index, config, child_inputs))
            for handle in handles:  # awaited in order: stable step numbering on replay
                result = await handle.get_result()
                if result["status"] != RunStatus.SUCCEEDED.value:
                    raise BlockFailureError(
                        f"item run {handle.workflow_id} {result['status']}: {result.get('error')}"
                    )
                results.append(result["outputs"])
        return {"results": results, "count": len(results)}, None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AtriumError):
        return exc.message
    text = str(exc) or type(exc).__name__
    return text if type(exc).__module__.startswith("atrium") else f"{type(exc).__name__}: {text}"
