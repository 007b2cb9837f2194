"""LangGraph: 50 trivial nodes, checkpointed to SQLite with ``durability="sync"``.

Run with the peer's own python (``langgraph`` and ``langgraph-checkpoint-sqlite``)::

    python langgraph_chain.py --shape chain --storage sqlite-wal --workdir /tmp/x

- ``chain``: a ``StateGraph`` of 50 nodes, each ``{"x": x + 1}``, START -> n0 -> ... -> n49
  -> END: 50 supersteps.
- ``fanout``: 10 branches of 5 nodes from START, branch i reading and writing its own key
  ``b<i>`` (no reducer needed): 5 supersteps of 10 nodes each, which LangGraph runs on its
  thread pool.
- ``sqlite-wal``: ``SqliteSaver`` on a file in ``--workdir`` (the saver itself sets
  ``journal_mode=WAL``; ``synchronous`` stays at SQLite's default, FULL), invoked with
  ``durability="sync"``: each superstep's checkpoint is written before the next starts.
  A fresh ``thread_id`` per repetition.
- ``none``: no checkpointer (nothing persisted), for the engine's own cost.
"""

from __future__ import annotations

import importlib.metadata
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from _timing import (
    BLOCKS,
    BRANCH_LENGTH,
    BRANCHES,
    BlockClock,
    arguments,
    emit,
    measure,
)
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

CLOCK = BlockClock()
STORAGES = ("sqlite-wal", "none")


class ChainState(TypedDict):
    """The chain's state: one number."""

    x: int


# One key per branch, so that parallel writers need no reducer.
FanoutState = TypedDict("FanoutState", {f"b{i}": int for i in range(BRANCHES)})  # type: ignore[misc]


def block(key: str, branch: int) -> Callable[[dict[str, Any]], dict[str, int]]:
    """A node that adds one to ``state[key]`` (and notes when it started)."""

    def run(state: dict[str, Any]) -> dict[str, int]:
        CLOCK.mark(branch)
        return {key: state[key] + 1}

    return run


def chain_graph() -> StateGraph:
    """START -> n0 -> ... -> n49 -> END."""
    graph = StateGraph(ChainState)
    previous = START
    for index in range(BLOCKS):
        graph.add_node(f"n{index}", block("x", 0))
        graph.add_edge(previous, f"n{index}")
        previous = f"n{index}"
    graph.add_edge(previous, END)
    return graph


def fanout_graph() -> StateGraph:
    """10 branches of 5 nodes, all from START, each to END."""
    graph = StateGraph(FanoutState)
    for branch in range(BRANCHES):
        previous = START
        for step in range(BRANCH_LENGTH):
            name = f"b{branch}_{step}"
            graph.add_node(name, block(f"b{branch}", branch))
            graph.add_edge(previous, name)
            previous = name
        graph.add_edge(previous, END)
    return graph


def check(shape: str, result: dict[str, int]) -> None:
    """Every block ran once: the chain adds 50, each branch 5."""
    expected = (
        {"x": BLOCKS} if shape == "chain" else {f"b{i}": BRANCH_LENGTH for i in range(BRANCHES)}
    )
    if dict(result) != expected:
        msg = f"unexpected result {result!r}"
        raise RuntimeError(msg)


def main() -> None:
    """Measure one shape on one storage and print the JSON line."""
    args = arguments("LangGraph, 50 trivial nodes", STORAGES)
    graph = chain_graph() if args.shape == "chain" else fanout_graph()
    start: dict[str, int] = (
        {"x": 0} if args.shape == "chain" else {f"b{i}": 0 for i in range(BRANCHES)}
    )
    conn = None
    saver = None
    if args.storage == "sqlite-wal":
        path = Path(args.workdir) / "checkpoints.sqlite"
        conn = sqlite3.connect(path, check_same_thread=False)
        saver = SqliteSaver(conn)
    app = graph.compile(checkpointer=saver)
    durability = "sync" if saver is not None else None

    def run_once(_index: int) -> Any:
        config = {"configurable": {"thread_id": str(uuid.uuid4())}, "recursion_limit": 200}
        return app.invoke(start, config, durability=durability)

    try:
        measured = measure(
            run_once, lambda r: check(args.shape, r), CLOCK, args.repetitions, args.warmup
        )
        pragmas = {}
        if conn is not None:
            pragmas = {
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": conn.execute("PRAGMA synchronous").fetchone()[0],
            }
    finally:
        if conn is not None:
            conn.close()
    emit(
        {
            "engine": "langgraph",
            "shape": args.shape,
            "storage": args.storage,
            "repetitions": args.repetitions,
            "warmup": args.warmup,
            "versions": {
                name: importlib.metadata.version(name)
                for name in ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite")
            },
            "settings": {
                "checkpointer": "SqliteSaver (file)" if saver else None,
                "durability": durability,
                "sqlite_pragmas": pragmas,
                "recursion_limit": 200,
            },
            **measured,
        }
    )


if __name__ == "__main__":
    main()
