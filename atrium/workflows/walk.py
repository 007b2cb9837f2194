"""The deterministic walk over a compiled graph.

The walk decides, from the results so far, which blocks run next and with which inputs;
it never does I/O itself. That makes it safe to replay: DBOS re-runs the workflow
function after a crash, recorded steps return their recorded results, and the walk makes
the same decisions again.

Blocks advance in supersteps (as in Pregel and LangGraph). Pure blocks are evaluated the
moment they are ready. When only side-effecting blocks are ready, they start together
in topological order, so DBOS numbers their steps the same way on every replay, and the
next superstep begins when all of them have finished. Concurrently started steps can
therefore never be matched to another step's recorded result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atrium.workflows.dsl import ErrorStrategy, value_fits
from atrium.workflows.graph import DONE, ERROR, CompiledNode, CompiledWorkflow


@dataclass(slots=True)
class Settled:
    """The result of a node that has finished, failed or been skipped."""

    status: str  # succeeded | failed | skipped
    outputs: dict[str, Any] = field(default_factory=dict)
    handles: tuple[str, ...] = ()
    error: str | None = None


@dataclass(slots=True)
class Ready:
    """A node the walk can run now, with its inputs resolved."""

    node: CompiledNode
    inputs: dict[str, Any]


class Walk:
    """The state of one run's walk: which nodes settled how."""

    def __init__(self, graph: CompiledWorkflow) -> None:
        self.graph = graph
        self.settled: dict[str, Settled] = {}
        self._position = {node_id: i for i, node_id in enumerate(graph.order)}
        # Unsettled predecessors per node; a node is a candidate once it has none, so each
        # step of the walk costs the edges it touches, not a scan of the whole graph.
        self._waiting_on = {
            node_id: len({e.source for e in node.incoming}) for node_id, node in graph.nodes.items()
        }
        self._candidates = {n for n, count in self._waiting_on.items() if count == 0}
        self._unsettled = len(graph.nodes)
        self.succeeded: dict[str, dict[str, Any]] = {}

    @property
    def done(self) -> bool:
        """Whether every node has settled."""
        return self._unsettled == 0

    def next_ready(self) -> tuple[list[Ready], list[str]]:
        """Nodes whose predecessors have all settled: (to run, to skip), in topological order."""
        ready: list[Ready] = []
        skipped: list[str] = []
        for node_id in sorted(self._candidates, key=self._position.__getitem__):
            node = self.graph.nodes[node_id]
            inputs = self._inputs(node)
            if inputs is None:
                skipped.append(node_id)
            else:
                ready.append(Ready(node, inputs))
        return ready, skipped

    def settle(self, node_id: str, result: Settled) -> None:
        """Record a node's result."""
        self.settled[node_id] = result
        self._candidates.discard(node_id)
        self._unsettled -= 1
        if result.status == "succeeded":
            self.succeeded[node_id] = result.outputs
        for target in {e.target for e in self.graph.nodes[node_id].outgoing}:
            self._waiting_on[target] -= 1
            if self._waiting_on[target] == 0:
                self._candidates.add(target)

    def _inputs(self, node: CompiledNode) -> dict[str, Any] | None:
        """The node's inputs, or None when it must be skipped.

        A node is skipped when none of its incoming edges fired, when it has control
        edges (``true``, ``approved``, ``done``...) and none of them fired, or when a
        required input has no value (its source was skipped or took another branch).
        """
        if not node.incoming:
            return {}
        values: dict[str, Any] = {}
        fired_any = False
        has_control = control_fired = False
        for edge in node.incoming:
            source = self.settled[edge.source]
            fired = _fires(source, edge.source_handle)
            if edge.target_handle is None:
                has_control = True
                control_fired = control_fired or fired
            if not fired:
                continue
            fired_any = True
            if edge.target_handle is None or edge.target_handle in values:
                continue
            if edge.source_handle == ERROR:
                values[edge.target_handle] = source.outputs.get("error")
            elif edge.source_handle in source.outputs:
                values[edge.target_handle] = source.outputs[edge.source_handle]
        if not fired_any or (has_control and not control_fired):
            return None
        for name, port in node.inputs.items():
            if name not in values and port.default is not None:
                values[name] = port.default
            if port.required and name not in values:
                return None
        return values


def _fires(source: Settled, handle: str) -> bool:
    if source.status == "skipped":
        return False
    if handle in source.handles:
        return True
    # A data port fires with the node's success, when the node produced it.
    return source.status == "succeeded" and handle in source.outputs and ERROR not in source.handles


def settle_failure(node: CompiledNode, error: str) -> Settled | None:
    """What a failed node becomes under its error strategy; None: the run fails."""
    strategy = node.spec.on_error
    if strategy == ErrorStrategy.BRANCH:
        return Settled("failed", {"error": {"message": error, "node": node.id}}, (ERROR,), error)
    if strategy == ErrorStrategy.DEFAULT:
        return Settled("succeeded", dict(node.spec.default_output), (DONE,), error)
    if strategy == ErrorStrategy.CONTINUE:
        return Settled("failed", {}, (DONE,), error)
    return None


def settle_success(
    node: CompiledNode, outputs: dict[str, Any], handles: tuple[str, ...] | None
) -> Settled:
    """A successful node; ``handles`` None fires ``done``."""
    return Settled("succeeded", outputs, handles if handles is not None else (DONE,))


def check_inputs(graph: CompiledWorkflow, inputs: dict[str, Any]) -> list[str]:
    """Problems with a run's inputs (missing, mistyped, unknown), before it starts."""
    problems: list[str] = []
    declared = graph.spec.inputs
    for name in inputs:
        if name not in declared:
            problems.append(f"unknown input {name!r} (inputs: {', '.join(declared) or 'none'})")
    for name, port in declared.items():
        if name not in inputs:
            if port.required and port.default is None:
                problems.append(f"missing required input {name!r} ({port.type})")
        elif not value_fits(inputs[name], port.type):
            problems.append(f"input {name!r} must be {port.type}")
    return problems


def with_defaults(graph: CompiledWorkflow, inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs with declared defaults filled in."""
    filled = dict(inputs)
    for name, port in graph.spec.inputs.items():
        if name not in filled and port.default is not None:
            filled[name] = port.default
    return filled


def workflow_outputs(graph: CompiledWorkflow, walk: Walk) -> dict[str, Any]:
    """The run's outputs: declared ``outputs``, then every End node's inputs."""
    outputs: dict[str, Any] = {}
    for node_id in graph.order:
        node = graph.nodes[node_id]
        settled = walk.settled.get(node_id)
        if node.spec.type == "end" and settled is not None and settled.status == "succeeded":
            outputs.update(settled.outputs)
    for name, spec in graph.spec.outputs.items():
        node_id, _, port = spec.source.partition(".")
        settled = walk.settled.get(node_id)
        if settled is not None and settled.status == "succeeded" and port in settled.outputs:
            outputs[name] = settled.outputs[port]
    return outputs
