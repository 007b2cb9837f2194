"""graphon (the graph engine inside Dify): 50 trivial code nodes, nothing persisted.

Run with the peer's own python (``graphon``)::

    python graphon_chain.py --shape chain --storage none --workdir /tmp/x

The graph is built with graphon's ``Graph.new()`` builder from its own node classes:
a Start node, 50 ``CodeNode``s (python3, ``def main(x): return {"x": x + 1}``, output
``x: number``), an End node that outputs the last value(s). graphon's ``CodeNode`` hands
the code to an injected executor (in Dify, an HTTP call to its sandbox); here the
executor runs the compiled ``main`` in process, so what is measured is the engine.

- ``chain``: Start -> c0 -> ... -> c49 -> End.
- ``fanout``: Start -> 10 branches of 5 code nodes -> End (which waits for all 10).
- Two times per repetition: to the result (the ``GraphRunSucceededEvent``, outputs in
  hand) and until ``GraphEngine.run()``'s generator is exhausted: on exit the engine stops
  its worker threads, which wait on their ready queue with a 0.1 s timeout.

The default ``GraphEngineConfig`` (1 to 5 worker threads) and a fresh ``GraphRuntimeState``,
graph and engine per repetition (graphon binds one runtime state to one run).
"""

from __future__ import annotations

import gc
import importlib.metadata
import time
from collections.abc import Mapping
from typing import Any

from _timing import (
    BLOCKS,
    BRANCH_LENGTH,
    BRANCHES,
    BlockClock,
    arguments,
    emit,
    percentile,
    spread,
)
from graphon.entities.graph_init_params import GraphInitParams
from graphon.graph import Graph
from graphon.graph_engine.command_channels import InMemoryChannel
from graphon.graph_engine.graph_engine import GraphEngine
from graphon.graph_events.graph import GraphRunSucceededEvent
from graphon.nodes.base.entities import OutputVariableEntity, VariableSelector
from graphon.nodes.code.code_node import CodeNode
from graphon.nodes.code.entities import CodeLanguage, CodeNodeData
from graphon.nodes.code.limits import CodeNodeLimits
from graphon.nodes.end.end_node import EndNode
from graphon.nodes.end.entities import EndNodeData
from graphon.nodes.start.entities import StartNodeData
from graphon.nodes.start.start_node import StartNode
from graphon.runtime.graph_runtime_state import GraphRuntimeState
from graphon.runtime.variable_pool import VariablePool

CLOCK = BlockClock()
CODE = "def main(x: int) -> dict:\n    return {'x': x + 1}\n"
LIMITS = CodeNodeLimits(
    max_string_length=80_000,
    max_number=2**63 - 1,
    min_number=-(2**63),
    max_precision=20,
    max_depth=5,
    max_number_array_length=1000,
    max_string_array_length=1000,
    max_object_array_length=1000,
)


class InProcessExecutor:
    """Runs a code node's ``main`` in this process (Dify calls its sandbox over HTTP)."""

    def __init__(self) -> None:
        self._compiled: dict[str, Any] = {}

    def execute(
        self, *, language: CodeLanguage, code: str, inputs: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """Call ``main(**inputs)`` of ``code`` (compiled once) and note the block's start."""
        if language != CodeLanguage.PYTHON3:
            msg = f"only python3 here, not {language}"
            raise ValueError(msg)
        main = self._compiled.get(code)
        if main is None:
            namespace: dict[str, Any] = {}
            exec(compile(code, "<code node>", "exec"), namespace)
            main = self._compiled[code] = namespace["main"]
        CLOCK.mark(int(inputs.get("branch", 0)))
        result: Mapping[str, Any] = main(x=inputs["x"])
        return result

    def is_execution_error(self, error: Exception) -> bool:
        """Errors from ``main`` are the node's failures."""
        return not isinstance(error, KeyError)


EXECUTOR = InProcessExecutor()


def code_node(
    node_id: str, source: list[str], branch: int, params: GraphInitParams, state: GraphRuntimeState
) -> CodeNode:
    """A python3 code node: ``x`` from ``source``, output ``x: number``."""
    data = CodeNodeData(
        title=node_id,
        variables=[
            VariableSelector(variable="x", value_selector=source),
            VariableSelector(variable="branch", value_selector=["start", f"branch{branch}"]),
        ],
        code_language=CodeLanguage.PYTHON3,
        code=CODE,
        outputs={"x": CodeNodeData.Output(type="number")},
    )
    return CodeNode(
        id=node_id,
        config={"id": node_id, "data": data},
        graph_init_params=params,
        graph_runtime_state=state,
        code_executor=EXECUTOR,
        code_limits=LIMITS,
    )


def build(shape: str, run: int) -> tuple[GraphEngine, GraphRuntimeState]:
    """A fresh graph, runtime state and engine for one run."""
    pool = VariablePool()
    pool.add(("start", "x"), 0)
    for index in range(BRANCHES):
        pool.add(("start", f"branch{index}"), index)
    state = GraphRuntimeState(variable_pool=pool, start_at=time.time())
    params = GraphInitParams(
        workflow_id=f"bench-{run}", graph_config={}, run_context={}, call_depth=0
    )
    start = StartNode(
        id="start",
        config={"id": "start", "data": StartNodeData(title="Start")},
        graph_init_params=params,
        graph_runtime_state=state,
    )
    builder = Graph.new().add_root(start)
    tails: list[str] = []
    branches = 1 if shape == "chain" else BRANCHES
    length = BLOCKS if shape == "chain" else BRANCH_LENGTH
    for branch in range(branches):
        previous = "start"
        for step in range(length):
            node_id = f"c{branch}_{step}"
            source = ["start", "x"] if previous == "start" else [previous, "x"]
            builder.add_node(
                code_node(node_id, source, branch, params, state), from_node_id=previous
            )
            previous = node_id
        tails.append(previous)
    outputs = [
        OutputVariableEntity(variable=f"x{i}", value_type="number", value_selector=[tail, "x"])
        for i, tail in enumerate(tails)
    ]
    end = EndNode(
        id="end",
        config={"id": "end", "data": EndNodeData(title="End", outputs=outputs)},
        graph_init_params=params,
        graph_runtime_state=state,
    )
    builder.add_node(end, from_node_id=tails[0])
    for tail in tails[1:]:
        builder.connect(tail=tail, head="end")
    engine = GraphEngine(
        workflow_id=f"bench-{run}",
        graph=builder.build(),
        graph_runtime_state=state,
        command_channel=InMemoryChannel(),
    )
    return engine, state


def run_once(shape: str, run: int) -> tuple[float, float, dict[str, object]]:
    """One run: seconds to the result, seconds until ``run()`` returns, the outputs."""
    engine, _state = build(shape, run)
    outputs: dict[str, object] | None = None
    to_result = None
    started = time.perf_counter()
    for graph_event in engine.run():
        if isinstance(graph_event, GraphRunSucceededEvent):
            to_result = time.perf_counter() - started
            outputs = dict(graph_event.outputs)
    returned = time.perf_counter() - started
    if to_result is None or outputs is None:
        msg = "the run did not succeed"
        raise RuntimeError(msg)
    return to_result, returned, outputs


def main() -> None:
    """Measure one shape and print the JSON line."""
    args = arguments("graphon, 50 trivial code nodes", ("none",))
    expected = (
        {"x0": BLOCKS}
        if args.shape == "chain"
        else {f"x{i}": BRANCH_LENGTH for i in range(BRANCHES)}
    )
    to_result: list[float] = []
    until_return: list[float] = []
    gaps: list[float] = []
    for index in range(args.warmup + args.repetitions):
        CLOCK.reset()
        gc.collect()
        result_s, return_s, outputs = run_once(args.shape, index)
        if outputs != expected or CLOCK.started() != BLOCKS:
            msg = f"unexpected outputs {outputs!r} ({CLOCK.started()} blocks ran)"
            raise RuntimeError(msg)
        if index >= args.warmup:
            to_result.append(result_s * 1000 / BLOCKS)
            until_return.append(return_s * 1000 / BLOCKS)
            gaps += CLOCK.gaps_ms()
    emit(
        {
            "engine": "graphon",
            "shape": args.shape,
            "storage": "none",
            "repetitions": args.repetitions,
            "warmup": args.warmup,
            "versions": {"graphon": importlib.metadata.version("graphon")},
            "settings": {
                "nodes": "Start + 50 CodeNode (python3, in-process executor) + End",
                "engine_config": "GraphEngineConfig() defaults (1-5 worker threads)",
            },
            "ms_per_block": [round(v, 4) for v in to_result],
            "ms_per_block_summary": spread(to_result),
            "ms_per_block_until_return": [round(v, 4) for v in until_return],
            "ms_per_block_until_return_summary": spread(until_return),
            "shutdown_ms_p50": round(
                percentile(
                    [(r - t) * BLOCKS for r, t in zip(until_return, to_result, strict=True)], 50
                ),
                3,
            ),
            "block_gap_ms": spread(gaps),
        }
    )


if __name__ == "__main__":
    main()
