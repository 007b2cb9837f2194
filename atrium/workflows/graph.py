"""Validation on save, and the compiled graph the engine walks.

:func:`compile_workflow` checks everything that can be checked before a run: unknown
blocks, invalid configs, edges to unknown nodes, ports or handles, type compatibility of
every edge, required inputs left unconnected, unreachable nodes, cycles (loops are Map
blocks over a child workflow, never back edges) and workflow outputs naming unknown ports.
Every problem names the node and the field; all of them are reported at once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from atrium.core.errors import InvalidRequestError
from atrium.workflows.blocks.base import Block, BlockConfig, BlockRegistry
from atrium.workflows.dsl import EdgeSpec, NodeSpec, PortSpec, WorkflowSpec, type_fits

START = "start"
DONE = "done"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a definition."""

    node: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"node {self.node!r}, {self.field}" if self.node else self.field
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the API and the builder (which marks the node)."""
        return {"node": self.node, "field": self.field, "message": self.message}


class WorkflowValidationError(InvalidRequestError):
    """The definition is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        listed = "; ".join(str(p) for p in problems)
        super().__init__(
            f"invalid workflow ({len(problems)} problem(s)): {listed}",
            param="definition",
            code="invalid_workflow",
        )
        self.problems = problems


@dataclass(slots=True)
class CompiledNode:
    """A node with its block, typed config and ports resolved."""

    spec: NodeSpec
    block: Block
    config: BlockConfig
    inputs: dict[str, PortSpec]
    outputs: dict[str, PortSpec]
    handles: tuple[str, ...]
    incoming: list[EdgeSpec] = field(default_factory=list)
    outgoing: list[EdgeSpec] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The node id."""
        return self.spec.id


@dataclass(slots=True)
class CompiledWorkflow:
    """A valid workflow, ready to walk: nodes in a stable topological order."""

    spec: WorkflowSpec
    nodes: dict[str, CompiledNode]
    order: list[str]

    @property
    def has_side_effects(self) -> bool:
        """Whether any node is a durable step or engine block."""
        return any(n.block.kind != "pure" for n in self.nodes.values())


def compile_workflow(spec: WorkflowSpec, registry: BlockRegistry) -> CompiledWorkflow:
    """Validate and compile; WorkflowValidationError with every problem otherwise."""
    problems: list[Problem] = []
    nodes = _compile_nodes(spec, registry, problems)
    _check_edges(spec, nodes, problems)
    order = _topological_order(nodes, problems)
    # Edges to a node that did not compile are unknown, so checks over edges would report
    # problems that are only echoes of that node's own.
    complete = len(nodes) == len(spec.nodes)
    if order is not None and complete:
        _check_reachability(nodes, problems)
    if complete:
        _check_required_inputs(nodes, problems)
    _check_outputs(spec, nodes, problems)
    if problems:
        raise WorkflowValidationError(problems)
    assert order is not None
    return CompiledWorkflow(spec, nodes, order)


def _compile_nodes(
    spec: WorkflowSpec, registry: BlockRegistry, problems: list[Problem]
) -> dict[str, CompiledNode]:
    nodes: dict[str, CompiledNode] = {}
    starts = [n for n in spec.nodes if n.type == START]
    if len(starts) != 1:
        problems.append(
            Problem(None, "nodes", f"a workflow needs exactly one start node, not {len(starts)}")
        )
    for node in spec.nodes:
        if node.id in nodes:
            problems.append(Problem(node.id, "id", "duplicate node id"))
            continue
        block = registry.get(node.type)
        if block is None:
            known = ", ".join(registry.types())
            problems.append(
                Problem(node.id, "type", f"unknown block {node.type!r} (known: {known})")
            )
            continue
        try:
            config = block.parse_config(node.config)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                message = err["msg"].removeprefix("Value error, ")
                problems.append(Problem(node.id, f"config.{where}" if where else "config", message))
            continue
        outputs = _start_outputs(spec) if node.type == START else block.outputs(config)
        handles = block.control_handles(config)
        clashes = sorted(set(handles) & {*outputs, DONE, ERROR})
        if clashes:
            problems.append(
                Problem(
                    node.id,
                    "config",
                    f"branch names clash with output ports or reserved handles: {clashes}",
                )
            )
            continue
        nodes[node.id] = CompiledNode(node, block, config, block.inputs(config), outputs, handles)
    return nodes


def _start_outputs(spec: WorkflowSpec) -> dict[str, PortSpec]:
    return {name: port.model_copy(update={"required": True}) for name, port in spec.inputs.items()}


def _check_edges(
    spec: WorkflowSpec, nodes: dict[str, CompiledNode], problems: list[Problem]
) -> None:
    ids = {n.id for n in spec.nodes}
    for index, edge in enumerate(spec.edges):
        where = f"edges[{index}]"
        source, target = nodes.get(edge.source), nodes.get(edge.target)
        if edge.source not in ids:
            problems.append(Problem(None, f"{where}.source", f"unknown node {edge.source!r}"))
        if edge.target not in ids:
            problems.append(Problem(None, f"{where}.target", f"unknown node {edge.target!r}"))
        if source is None or target is None:
            continue
        source_type = _source_type(source, edge, problems, where)
        if edge.target_handle is not None:
            port = target.inputs.get(edge.target_handle)
            if port is None:
                known = ", ".join(target.inputs) or "none"
                problems.append(
                    Problem(
                        target.id,
                        f"inputs.{edge.target_handle}",
                        f"no such input (inputs: {known}); edge from {edge.source!r}",
                    )
                )
            elif source_type is not None and not type_fits(source_type, port.type):
                problems.append(
                    Problem(
                        target.id,
                        f"inputs.{edge.target_handle}",
                        f"type mismatch: {edge.source}.{edge.source_handle} is "
                        f"{source_type}, the input takes {port.type}",
                    )
                )
        source.outgoing.append(edge)
        target.incoming.append(edge)


def _source_type(
    source: CompiledNode, edge: EdgeSpec, problems: list[Problem], where: str
) -> str | None:
    """The type flowing along an edge; None for a control handle (carries no value)."""
    handle = edge.source_handle
    if handle in source.outputs:
        return source.outputs[handle].type
    if handle == DONE or handle in source.handles:
        if edge.target_handle is not None:
            problems.append(
                Problem(
                    source.id,
                    f"{where}.source_handle",
                    f"control handle {handle!r} carries no value into "
                    f"{edge.target}.{edge.target_handle}",
                )
            )
        return None
    if handle == ERROR:
        if source.spec.on_error != "branch":
            problems.append(
                Problem(
                    source.id,
                    "on_error",
                    "an edge leaves the error handle but on_error is not 'branch'",
                )
            )
        return "object" if edge.target_handle is not None else None
    known = ", ".join([*source.outputs, DONE, *source.handles, ERROR])
    problems.append(
        Problem(
            source.id, f"{where}.source_handle", f"no output or handle {handle!r} (known: {known})"
        )
    )
    return None


def _topological_order(nodes: dict[str, CompiledNode], problems: list[Problem]) -> list[str] | None:
    """Kahn's algorithm, ties broken by definition order (stable step numbering)."""
    position = {node_id: i for i, node_id in enumerate(nodes)}
    indegree = dict.fromkeys(nodes, 0)
    successors: dict[str, set[str]] = defaultdict(set)
    for node in nodes.values():
        for edge in node.outgoing:
            if edge.target in nodes and edge.target not in successors[node.id]:
                successors[node.id].add(edge.target)
                indegree[edge.target] += 1
    ready = sorted((n for n, d in indegree.items() if d == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for nxt in sorted(successors[current], key=position.__getitem__):
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
        ready.sort(key=position.__getitem__)
    if len(order) != len(nodes):
        cyclic = sorted(set(nodes) - set(order), key=position.__getitem__)
        for node_id in cyclic:
            problems.append(
                Problem(
                    node_id,
                    "edges",
                    "part of a cycle: loop with a Map block over a child workflow instead",
                )
            )
        return None
    return order


def _check_reachability(nodes: dict[str, CompiledNode], problems: list[Problem]) -> None:
    starts = [n for n in nodes.values() if n.spec.type == START]
    if not starts:
        return
    seen = {starts[0].id}
    stack = [starts[0].id]
    while stack:
        for edge in nodes[stack.pop()].outgoing:
            if edge.target not in seen:
                seen.add(edge.target)
                stack.append(edge.target)
    for node_id in nodes:
        if node_id not in seen:
            problems.append(Problem(node_id, "edges", "unreachable from the start node"))


def _check_required_inputs(nodes: dict[str, CompiledNode], problems: list[Problem]) -> None:
    for node in nodes.values():
        connected = {e.target_handle for e in node.incoming if e.target_handle is not None}
        for name, port in node.inputs.items():
            if port.required and port.default is None and name not in connected:
                problems.append(
                    Problem(node.id, f"inputs.{name}", "required input is not connected")
                )


def _check_outputs(
    spec: WorkflowSpec, nodes: dict[str, CompiledNode], problems: list[Problem]
) -> None:
    for name, output in spec.outputs.items():
        node_id, _, port = output.source.partition(".")
        node = nodes.get(node_id)
        if node is None:
            problems.append(Problem(None, f"outputs.{name}", f"unknown node {node_id!r}"))
        elif port not in node.outputs:
            problems.append(Problem(node_id, f"outputs.{name}", f"node has no output {port!r}"))
