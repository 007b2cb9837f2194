"""Atrium's workflow engine: per-block overhead, blocks/s and end-to-end latency, beside peers.

Everything runs through the production code: a :class:`~atrium.workflows.engine.WorkflowEngine`
on a real store (:class:`~atrium.store.workflows.WorkflowRepository`) and DBOS system
database, set up as the platform sets them up, and ``atrium serve`` for the end-to-end
numbers. Measured in one run on one machine:

- side-effecting blocks: graphs of 50 trivial ``step`` blocks (``x -> x + 1``, each noting
  when it starts), a chain and a fan-out of 10 parallel branches of 5, on SQLite (the
  engine's default: the store in an aiosqlite file, DBOS's system database in another
  SQLite file) and on PostgreSQL (one throwaway database on 127.0.0.1:5432 holding both,
  dropped at the end). Each block's output is checkpointed before its successors start;
- pure blocks: a chain of 50 Transform blocks (``data + 1``, Jinja), on SQLite, and a
  chain of 1, whose difference gives the engine's marginal cost per pure block;
- end to end: a published 10-block Transform chain on a running ``atrium serve`` (fresh
  data folder, fresh bootstrap key), ``POST /v1/workflows/{name}/runs`` in sync mode on
  one keep-alive connection, timed from the request to the last byte of the answer;
- the peers (LangGraph, DBOS, graphon) through ``_workflow_peers.run_peers``, same
  repetitions, in the same run.

The method is the peers' (``peers_workflow/_timing.py``): a few untimed runs, then each
timed run after a full collection (the collector stays on while timing); ms per block =
wall time from submitting the run to its result / number of blocks (p50 and p99 over the
repetitions); block gap = start of a block to the start of the next in the same branch.
Before each measured case the script waits for a quiet machine and records the CPU other
processes used meanwhile.

    .venv/bin/python bench/workflow_engine.py        # about 5 minutes on a quiet machine
    .venv/bin/python bench/workflow_engine.py --repetitions 5 --skip-peers --no-write \
        --start-quiet-timeout 0                      # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from _common import (
    WORK_DIR,
    AtriumServer,
    AtriumSource,
    ForeignLoad,
    JSONDict,
    atrium_server,
    connect,
    machine_facts,
    markdown_table,
    ms,
    package_version,
    run_main,
    summary,
    tree_cpu_seconds,
    wait_for_quiet,
    write_results,
)
from _workflow_peers import (
    DEFAULT_WARMUP,
    PACKAGES,
    PG_SERVER,
    peer_table,
    run_peers,
    throwaway_database,
)
from peers_workflow._timing import BLOCKS, BRANCH_LENGTH, BRANCHES, BlockClock, spread

from atrium.core.netguard import NetworkPolicy
from atrium.core.settings import StoreSettings, WorkflowSettings
from atrium.store import Database
from atrium.store.workflows import WorkflowRepository
from atrium.workflows.blocks.base import (
    Block,
    BlockConfig,
    BlockContext,
    BlockRegistry,
    BlockResult,
    BlockServices,
)
from atrium.workflows.blocks.core import core_blocks
from atrium.workflows.dsl import PortSpec
from atrium.workflows.engine import EngineConfig, WorkflowEngine
from atrium.workflows.recorder import RunRecorder
from atrium.workflows.records import NewRun, VersionRef
from atrium.workflows.service import WorkflowService, new_run_id

NAME = "workflow_engine"
RUN_DIR = WORK_DIR / NAME
KEY_ID = "key_bench"
E2E_BLOCKS = 10
CONCURRENT = 10  # runs at once, for a worker's throughput
TRANSFORM = {
    "language": "jinja",
    "expressions": {"x": "data + 1"},
    "output_types": {"x": "integer"},
}
CLOCK = BlockClock()


# -- the side-effecting block ------------------------------------------------------------


class StepConfig(BlockConfig):
    """Which branch of the graph the block belongs to (for the block gaps)."""

    branch: int = 0


class StepBlock(Block):
    """``x + 1`` as a durable step, noting when it starts (the trivial side effect)."""

    type = "add"
    title = "Add one"
    description = "x + 1, checkpointed"
    kind = "step"
    Config = StepConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        """One integer in."""
        return {"x": PortSpec(type="integer")}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        """One integer out."""
        return {"x": PortSpec(type="integer")}

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        """Note the start, add one."""
        assert isinstance(config, StepConfig)
        CLOCK.mark(hash((ctx.run_id, config.branch)))  # a branch of one run
        return BlockResult({"x": inputs["x"] + 1})


# -- the graphs ---------------------------------------------------------------------------


def _edge(source: str, target: str, source_handle: str = "x", target_handle: str = "x") -> JSONDict:
    return {"source": source, "source_handle": source_handle, "target": target} | {
        "target_handle": target_handle
    }


def chain(name: str, blocks: int, *, pure: bool) -> JSONDict:
    """Start -> n0 -> ... -> n(blocks-1), step blocks or Transforms; output ``x`` of the last."""
    node: JSONDict = {"type": "transform", "config": TRANSFORM} if pure else {"type": "add"}
    nodes: list[JSONDict] = [{"id": "start", "type": "start"}]
    nodes += [{"id": f"n{index}", **node} for index in range(blocks)]
    ids = [n["id"] for n in nodes]
    edges = [_edge(a, b, "x", "data" if pure else "x") for a, b in pairwise(ids)]
    inputs = {"x": {"type": "integer"}}
    outputs = {"x": {"source": f"{ids[-1]}.x"}}
    return {"name": name, "inputs": inputs, "outputs": outputs, "nodes": nodes, "edges": edges}


def step_fanout(name: str) -> JSONDict:
    """Start -> 10 branches of 5 step blocks -> End (outputs r0..r9)."""
    nodes: list[JSONDict] = [{"id": "start", "type": "start"}]
    edges: list[JSONDict] = []
    ends: JSONDict = {}
    for branch in range(BRANCHES):
        previous = "start"
        for depth in range(BRANCH_LENGTH):
            node_id = f"b{branch}_{depth}"
            nodes.append({"id": node_id, "type": "add", "config": {"branch": branch}})
            edges.append(_edge(previous, node_id))
            previous = node_id
        ends[f"r{branch}"] = {"type": "integer"}
        edges.append(_edge(previous, "end", target_handle=f"r{branch}"))
    nodes.append({"id": "end", "type": "end", "config": {"outputs": ends}})
    return {"name": name, "inputs": {"x": {"type": "integer"}}, "nodes": nodes, "edges": edges}


@dataclass(frozen=True)
class Case:
    """One graph to measure: its definition, the result it must give, the steps it starts."""

    kind: str  # side-effecting | pure
    shape: str
    blocks: int
    definition: JSONDict
    expected: JSONDict
    steps: int
    runs: int = 1  # started at once

    @property
    def name(self) -> str:
        """The workflow's name."""
        return str(self.definition["name"])


def step_cases() -> list[Case]:
    """The side-effecting chain, fan-out, and chains started at once."""
    fanned = {f"r{b}": BRANCH_LENGTH for b in range(BRANCHES)}
    steps, expected = chain("step_chain", BLOCKS, pure=False), {"x": BLOCKS}
    many = f"{CONCURRENT} chains at once"
    return [
        Case("side-effecting", "chain", BLOCKS, steps, expected, BLOCKS),
        Case("side-effecting", "fanout", BLOCKS, step_fanout("step_fanout"), fanned, BLOCKS),
        Case("side-effecting", many, BLOCKS, steps, expected, BLOCKS, CONCURRENT),
    ]


def pure_cases() -> list[Case]:
    """The 50-block and the 1-block Transform chains."""
    one = Case("pure", "chain of 1", 1, chain("pure_chain_1", 1, pure=True), {"x": 1}, 0)
    return [Case("pure", "chain", BLOCKS, chain("pure", BLOCKS, pure=True), {"x": BLOCKS}, 0), one]


# -- the engine, as the platform builds it ------------------------------------------------


class _NoService:
    """The bench's blocks reach no platform service."""

    def __getattr__(self, name: str) -> Any:
        msg = f"unexpected service call: {name}"
        raise AssertionError(msg)


@dataclass
class Stack:
    """An engine on a real store, and the service that saves and publishes definitions."""

    engine: WorkflowEngine
    service: WorkflowService
    repo: WorkflowRepository


@asynccontextmanager
async def engine_stack(store_url: str, system_url: str, executor_id: str) -> AsyncIterator[Stack]:
    """A started engine on ``store_url`` (async SQLAlchemy) and ``system_url`` (DBOS's)."""
    db = Database(store_url, pool_size=StoreSettings().pool_size)
    await db.migrate()
    repo = WorkflowRepository(db)
    none: Any = _NoService()
    services = BlockServices(none, none, none, none, none, NetworkPolicy())
    defaults = WorkflowSettings()
    config = EngineConfig(system_url, executor_id, queue_concurrency=defaults.queue_concurrency)
    engine = WorkflowEngine(
        config=config,
        registry=BlockRegistry([*core_blocks(), StepBlock()]),
        services=services,
        store=repo,
        recorder=RunRecorder(repo),
    )
    service = WorkflowService(
        repo,
        engine,
        none,
        sync_timeout=defaults.sync_timeout_seconds,
        max_inputs_bytes=defaults.max_inputs_bytes,
    )
    await engine.start()
    try:
        yield Stack(engine, service, repo)
    finally:
        await engine.close()
        await db.close()


# -- measuring in process -----------------------------------------------------------------


async def run_to_result(stack: Stack, version: VersionRef) -> str:
    """Submit a run and await its end, as the API's sync mode does; the run's id.

    A run started in this process is awaited on DBOS's own handle: it ends once DBOS has
    recorded the workflow's output, after the run's final step (its row's outputs).
    """
    run_id = await stack.engine.submit(NewRun(new_run_id(), version, {"x": 0}, KEY_ID))
    if not await stack.engine.wait(run_id, 60):
        msg = f"run {run_id} did not end within 60 s"
        raise RuntimeError(msg)
    return run_id


async def pure_gaps(stack: Stack, run_id: str) -> list[float]:
    """Start-to-start gaps (ms) of a pure chain's blocks, from their recorded start times."""
    starts: list[datetime] = [
        n.started_at
        for n in await stack.service.nodes(run_id)
        if n.block_type == "transform" and n.started_at is not None
    ]
    starts.sort()
    return [(b - a).total_seconds() * 1000 for a, b in pairwise(starts)]


async def measure_case(stack: Stack, case: Case, repetitions: int, warmup: int) -> JSONDict:
    """``warmup`` untimed and ``repetitions`` timed runs of one graph, as the peers do."""
    version = await stack.repo.resolve(case.name, None)
    per_block: list[float] = []
    run_ms: list[float] = []
    gaps: list[float] = []
    for index in range(warmup + repetitions):
        CLOCK.reset()
        gc.collect()
        started = time.perf_counter()
        run_ids = await asyncio.gather(*(run_to_result(stack, version) for _ in range(case.runs)))
        elapsed = time.perf_counter() - started
        for run_id in run_ids:
            record = await stack.repo.run(run_id)
            if record.status.value != "succeeded" or record.outputs != case.expected:
                msg = f"{case.name}: run {run_id} ended {record.status.value}: {record.outputs!r}"
                raise RuntimeError(msg)
        if CLOCK.started() != case.steps * case.runs:
            msg = f"{case.name}: {CLOCK.started()} step blocks ran, expected {case.steps}"
            raise RuntimeError(msg)
        if index < warmup:
            continue
        per_block.append(elapsed * 1000 / (case.blocks * case.runs))
        run_ms.append(elapsed * 1000)
        gaps += CLOCK.gaps_ms() if case.steps else await pure_gaps(stack, run_ids[0])
    return {
        "ms_per_block": [round(v, 4) for v in per_block],
        "ms_per_block_summary": spread(per_block),
        "run_ms_summary": spread(run_ms),
        "block_gap_ms": spread(gaps),
    }


@dataclass(frozen=True)
class Options:
    """What to measure and how often."""

    repetitions: int
    warmup: int
    max_foreign_cores: float
    quiet_timeout: float


def atrium_row(case: Case, storage: str, out: JSONDict, foreign: float, notes: str) -> JSONDict:
    """A result row in the peers' shape."""
    per_block, gaps = out["ms_per_block_summary"], out["block_gap_ms"]
    return {
        "engine": "atrium",
        "label": "Atrium",
        "kind": case.kind,
        "shape": case.shape,
        "blocks": case.blocks,
        "runs_at_once": case.runs,
        "storage": storage,
        "ms_per_block_p50": per_block["p50"],
        "ms_per_block_p99": per_block["p99"],
        "blocks_per_s": round(1000 / per_block["p50"], 1),
        "block_gap_ms_p50": gaps.get("p50"),
        "block_gap_ms_p99": gaps.get("p99"),
        "notes": notes,
        "foreign_cores_during": foreign,
        "error": None,
        "detail": out,
    }


async def measure_backend(
    storage: str, store_url: str, system_url: str, cases: Sequence[Case], options: Options
) -> list[JSONDict]:
    """Publish the cases on one engine and measure each after a quiet wait."""
    executor = "local" if system_url.startswith("sqlite") else f"bench-{os.getpid()}"
    rows: list[JSONDict] = []
    async with engine_stack(store_url, system_url, executor) as stack:
        for case in {case.name: case for case in cases}.values():
            await stack.service.create(case.definition, created_by=None)
            await stack.service.publish(case.name, note="", created_by=None)
        for case in cases:
            quiet = await asyncio.to_thread(
                wait_for_quiet, options.max_foreign_cores, timeout_s=options.quiet_timeout
            )
            meter = ForeignLoad().start()
            started = time.monotonic()
            out = await measure_case(stack, case, options.repetitions, options.warmup)
            row = atrium_row(case, storage, out, meter.stop(), _notes(case, storage))
            row |= {"quiet_wait": quiet, "wall_s": round(time.monotonic() - started, 2)}
            print(_progress(row), flush=True)
            rows.append(row)
    return rows


def _notes(case: Case, storage: str) -> str:
    where = {
        "sqlite": "store: aiosqlite file (WAL); DBOS system database: SQLite file (WAL, "
        "synchronous=NORMAL), as the platform configures them",
        "postgres": "store (asyncpg) and DBOS system database in one throwaway database",
    }[storage]
    if case.kind == "pure":
        what = f"{case.blocks} Transform block(s) (Jinja `data + 1`) after Start; gaps from the"
        what += " recorded start times"
    elif case.runs > 1:
        what = f"{case.runs} runs of the chain started at once (ms/block: wall / {case.runs * 50})"
    elif case.shape == "chain":
        what = "50 step blocks in sequence after Start"
    else:
        what = "10 branches of 5 step blocks after Start, joined by End (5 supersteps of 10)"
    return f"{what}; {where}"


def _progress(row: JSONDict) -> str:
    return (
        f"atrium {row['kind']} {row['shape']} x{row['blocks']} {row['storage']}: "
        f"{row['ms_per_block_p50']:.3f} ms/block p50, {row['ms_per_block_p99']:.3f} p99, "
        f"gap p50 {row['block_gap_ms_p50']} (other work {row['foreign_cores_during']:.2f} cores)"
    )


def measure_atrium(options: Options, *, postgres: bool) -> list[JSONDict]:
    """SQLite (side-effecting and pure), then PostgreSQL (side-effecting)."""
    folder = RUN_DIR / "sqlite"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    store, system = (
        f"sqlite+aiosqlite:///{folder}/atrium.db",
        f"sqlite:///{folder}/workflows.sqlite",
    )
    cases = [*step_cases(), *pure_cases()]
    rows = asyncio.run(measure_backend("sqlite", store, system, cases, options))
    if postgres:
        with throwaway_database(PG_SERVER) as url:
            store = "postgresql+asyncpg://" + url.split("://", 1)[1]
            rows += asyncio.run(measure_backend("postgres", store, url, step_cases(), options))
    return rows


def marginal_pure(rows: Sequence[JSONDict]) -> JSONDict | None:
    """(run time of 50 pure blocks - run time of 1) / 49, from the two runs' medians."""
    runs = {
        r["blocks"]: r["detail"]["run_ms_summary"]["p50"]
        for r in rows
        if r["kind"] == "pure" and r["storage"] == "sqlite"
    }
    if BLOCKS not in runs or 1 not in runs:
        return None
    return {
        "ms_per_pure_block": round((runs[BLOCKS] - runs[1]) / (BLOCKS - 1), 4),
        "run_ms_p50_50_blocks": runs[BLOCKS],
        "run_ms_p50_1_block": runs[1],
    }


# -- end to end through atrium serve ------------------------------------------------------


def _call(conn: Any, method: str, path: str, key: str, body: JSONDict) -> tuple[int, JSONDict]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    conn.request(method, path, body=json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def measure_e2e(requests: int, warmup: int, options: Options) -> JSONDict:
    """Sequential sync-mode runs of a published 10-block pure chain through ``atrium serve``."""
    server = AtriumServer(RUN_DIR / "server", models={})
    name = "pure_chain_e2e"
    path = f"/v1/workflows/{name}/runs"
    run_body = {"inputs": {"x": 0}, "mode": "sync"}
    with atrium_server(server):
        conn = connect(server.port)
        for step, body in (
            ("/v1/workflows", chain(name, E2E_BLOCKS, pure=True)),
            (f"/v1/workflows/{name}/publish", {}),
        ):
            status, answer = _call(conn, "POST", step, server.key, body)
            if status != 201:
                msg = f"POST {step}: {status} {answer}"
                raise RuntimeError(msg)
        conn.close()
        quiet = wait_for_quiet(options.max_foreign_cores, timeout_s=options.quiet_timeout)
        conn = connect(server.port)  # a fresh one: the server drops idle keep-alives after 5 s
        for _ in range(warmup):
            _check_run(*_call(conn, "POST", path, server.key, run_body))
        meter = ForeignLoad().start()
        cpu_before = tree_cpu_seconds(server.pid)
        latencies: list[float] = []
        gc.disable()  # the client's collector: not what is measured
        try:
            for _ in range(requests):
                started = time.perf_counter()
                status, answer = _call(conn, "POST", path, server.key, run_body)
                latencies.append((time.perf_counter() - started) * 1000)
                _check_run(status, answer)
        finally:
            gc.enable()
        cpu = tree_cpu_seconds(server.pid) - cpu_before
        foreign = meter.stop()
        conn.close()
    return {
        "blocks": E2E_BLOCKS,
        "requests": requests,
        "warmup": warmup,
        "latency_ms": summary(latencies),
        "server_cpu_ms_per_request": round(cpu * 1000 / requests, 3),
        "foreign_cores_during": foreign,
        "quiet_wait": quiet,
        "notes": (
            f"Start + {E2E_BLOCKS} Transform blocks (Jinja `data + 1`); POST {path} "
            '{"inputs": {"x": 0}, "mode": "sync"} with the bootstrap key, one keep-alive '
            "connection (stdlib http.client, TCP_NODELAY, the client's collector off while "
            "timing); store and DBOS system database: the default SQLite files in a fresh "
            "data folder"
        ),
    }


def _check_run(status: int, answer: JSONDict) -> None:
    if status != 200 or answer.get("status") != "succeeded":
        msg = f"run answered {status}: {answer}"
        raise RuntimeError(msg)
    if answer.get("outputs") != {"x": E2E_BLOCKS}:
        msg = f"unexpected outputs {answer.get('outputs')!r}"
        raise RuntimeError(msg)


# -- the report ---------------------------------------------------------------------------


def _p50(row: JSONDict | None) -> float | None:
    return None if row is None else row["ms_per_block_p50"]


def atrium_table(rows: Sequence[JSONDict]) -> str:
    """Atrium's rows as a Markdown table."""
    headers = ["blocks", "shape", "storage", "ms/block p50", "ms/block p99", "blocks/s"]
    headers += ["block gap p50", "block gap p99", "other work (cores)", "notes"]
    body = [
        [
            f"{row['kind']} x{row['blocks']}",
            row["shape"],
            row["storage"],
            f"**{ms(row['ms_per_block_p50'], 3)}**",
            ms(row["ms_per_block_p99"], 3),
            ms(row["blocks_per_s"], 0),
            ms(row["block_gap_ms_p50"], 3),
            ms(row["block_gap_ms_p99"], 3),
            ms(row["foreign_cores_during"], 2),
            row["notes"],
        ]
        for row in rows
    ]
    return markdown_table(headers, body)


def _ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or not theirs else f"{ours / theirs:.2f}"


def _find(rows: Sequence[JSONDict], spec: str) -> JSONDict | None:
    """The row ``kind:shape:storage`` (Atrium's) or ``engine:shape:storage`` (a peer's)."""
    first, shape, storage = spec.split(":")
    for row in rows:
        owner = (row.get("kind"), row.get("engine"))
        if first in owner and row["shape"] == shape and row["storage"] == storage:
            return None if row.get("error") else row
    return None


COMPARISONS = (  # Atrium's row, the peer's row, what the peer is
    ("side-effecting:chain:sqlite", "dbos:chain:sqlite-wal", "DBOS alone, SQLite WAL"),
    ("side-effecting:chain:sqlite", "dbos:chain:sqlite", "DBOS alone, its default SQLite"),
    ("side-effecting:chain:sqlite", "langgraph:chain:sqlite-wal", "LangGraph, SqliteSaver sync"),
    ("side-effecting:fanout:sqlite", "dbos:fanout:sqlite-wal", "DBOS alone, SQLite WAL"),
    ("side-effecting:fanout:sqlite", "langgraph:fanout:sqlite-wal", "LangGraph, SqliteSaver sync"),
    ("side-effecting:chain:postgres", "dbos:chain:postgres", "DBOS alone, PostgreSQL"),
    ("side-effecting:fanout:postgres", "dbos:fanout:postgres", "DBOS alone, PostgreSQL"),
    ("pure:chain:sqlite", "graphon:chain:none", "graphon, nothing persisted"),
    ("pure:chain:sqlite", "langgraph:chain:none", "LangGraph, no checkpointer"),
)


def ratio_table(
    atrium: Sequence[JSONDict], peers: Sequence[JSONDict], marginal: float | None
) -> str:
    """Atrium's ms/block p50 over each peer's (below 1: Atrium takes less time per block)."""
    body = []
    for ours, theirs, who in COMPARISONS:
        mine, peer = _p50(_find(atrium, ours)), _p50(_find(peers, theirs))
        what = f"{ours.replace(':', ' ')} vs {who}"
        body.append([what, ms(mine, 3), ms(peer, 3), _ratio(mine, peer)])
        if marginal is not None and ours.startswith("pure"):
            body.append(
                [f"{what} (marginal cost)", ms(marginal, 3), ms(peer, 3), _ratio(marginal, peer)]
            )
    return markdown_table(["comparison (ms/block p50)", "Atrium", "peer", "Atrium / peer"], body)


def _verdict(value: float | None, limit: float) -> str:
    return "-" if value is None else ("met" if value <= limit else "**missed**")


def target_table(data: JSONDict) -> str:
    """Each target from the issue, what was measured, and whether it is met."""
    atrium, peers = data["atrium"], data["peers"]
    chain = _p50(_find(atrium, "side-effecting:chain:sqlite"))
    fanout = _p50(_find(atrium, "side-effecting:fanout:sqlite"))
    dbos = _p50(_find(peers, "dbos:chain:sqlite-wal"))
    dbos_fan = _p50(_find(peers, "dbos:fanout:sqlite-wal"))
    pure = _p50(_find(atrium, "pure:chain:sqlite"))
    marginal = (data["pure_marginal"] or {}).get("ms_per_pure_block")
    e2e = data["e2e"]["latency_ms"] if data["e2e"] else {}
    floor = None if chain is None or not dbos else chain / dbos
    dbos_default = _p50(_find(peers, "dbos:chain:sqlite"))
    default_floor = None if chain is None or not dbos_default else chain / dbos_default
    p50, p99 = e2e.get("p50"), e2e.get("p99")
    rows = [
        (
            "side-effecting blocks on SQLite, chain: at most 2.5 ms p50",
            f"{ms(chain, 3)} ms (DBOS alone {ms(dbos, 3)})",
            _verdict(chain, 2.5),
        ),
        (
            "side-effecting blocks on SQLite, fan-out: at most 2.5 ms p50",
            f"{ms(fanout, 3)} ms (DBOS alone {ms(dbos_fan, 3)})",
            _verdict(fanout, 2.5),
        ),
        (
            "side-effecting chain on SQLite: DBOS alone (its default SQLite, this run) + 10%",
            f"{ms(default_floor, 2)}x DBOS ({ms(dbos_default, 3)} ms)",
            _verdict(default_floor, 1.10),
        ),
        (
            "side-effecting chain on SQLite: DBOS alone (the same WAL settings, this run) + 10%",
            f"{ms(floor, 2)}x DBOS ({ms(dbos, 3)} ms)",
            _verdict(floor, 1.10),
        ),
        (
            "pure blocks: at most 0.3 ms (50-block chain, the run's fixed cost included)",
            f"{ms(pure, 3)} ms",
            _verdict(pure, 0.3),
        ),
        (
            "pure blocks: at most 0.3 ms (marginal: (50-block run - 1-block run) / 49)",
            f"{ms(marginal, 3)} ms",
            _verdict(marginal, 0.3),
        ),
        (
            "10-block pure graph, API call to result: under 20 ms p50",
            f"{ms(p50)} ms (p99 {ms(p99)})",
            _verdict(p50, 19.999),
        ),
        (
            "zero lost or duplicated blocks in the kill tests",
            "tests/e2e/test_workflow_crashes.py, not here; here every run started each step block "
            "exactly once (checked)",
            "-",
        ),
    ]
    return markdown_table(["target", "measured", "verdict"], [list(r) for r in rows])


def e2e_table(e2e: JSONDict) -> str:
    """The end-to-end latency as a one-row table."""
    lat = e2e["latency_ms"]
    headers = ["graph", "requests", "p50 ms", "p95 ms", "p99 ms", "mean ms"]
    headers += ["server CPU ms per request", "other work (cores)"]
    row = [f"Start + {e2e['blocks']} Transform", f"{e2e['requests']:,}", f"**{ms(lat['p50'])}**"]
    row += [ms(lat[q]) for q in ("p95", "p99", "mean")]
    row += [ms(e2e["server_cpu_ms_per_request"]), ms(e2e["foreign_cores_during"])]
    return markdown_table(headers, [row])


def markdown(data: JSONDict) -> str:
    """The results as Markdown (also spliced into bench/README.md)."""
    facts, settings = data["machine"], data["settings"]
    commit = (facts["atrium"].get("commit") or "unknown")[:12]
    dirty = " (with uncommitted edits)" if facts["atrium"].get("atrium_dirty") else ""
    parts = [
        f"Workflow engine, {facts['timestamp_utc']}: {facts['cpu_model'].split()[0]} "
        f"{facts['cpu_model'].split()[1] if len(facts['cpu_model'].split()) > 1 else ''}, "
        f"{facts['cpus_usable']} cores, Python {facts['python']}, atrium {commit}{dirty}, "
        f"dbos {facts.get('dbos')}; {settings['repetitions']} timed runs per graph after "
        f"{settings['warmup']} untimed; {data['wall_minutes']} min.",
        "Peers: " + ", ".join(pin for p in PACKAGES.values() for pin in p.pins) + ".",
        "**Atrium** (in process, the platform's engine and store): ms/block = wall time from "
        "submitting a run to its result / blocks (p50, p99 over the runs); blocks/s = "
        "1000 / p50; block gap = start of a block to the start of the next in its branch.",
        atrium_table(data["atrium"]),
    ]
    marginal = data["pure_marginal"]
    if marginal:
        parts.append(
            f"Marginal cost of a pure block: ({ms(marginal['run_ms_p50_50_blocks'], 3)} ms for "
            f"50 - {ms(marginal['run_ms_p50_1_block'], 3)} ms for 1) / 49 = "
            f"**{ms(marginal['ms_per_pure_block'], 3)} ms** (the rest of a pure run is its "
            "fixed cost: the run's row, starting the durable workflow, its final step)."
        )
    if data["e2e"]:
        parts += [
            "**End to end** through `atrium serve`: " + data["e2e"]["notes"] + ".",
            e2e_table(data["e2e"]),
        ]
    if data["peers"]:
        parts += [
            "**Peers**, same machine, same run, same method:",
            peer_table(data["peers"]),
            "**Ratios** (below 1: Atrium takes less time per block):",
            ratio_table(data["atrium"], data["peers"], (marginal or {}).get("ms_per_pure_block")),
        ]
    parts += ["**Targets** (from the issue):", target_table(data)]
    foreign = [
        r["foreign_cores_during"]
        for r in [*data["atrium"], *data["peers"]]
        if r.get("foreign_cores_during") is not None
    ]
    if data["e2e"]:
        foreign.append(data["e2e"]["foreign_cores_during"])
    if foreign:
        parts.append(
            f"Other work on the machine during the measured cases: {min(foreign):.2f}-"
            f"{max(foreign):.2f} cores (median {statistics.median(foreign):.2f}); well above "
            "zero means a noisy result."
        )
    return "\n\n".join(parts) + "\n"


# -- the run ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--repetitions", type=int, default=20, help="timed runs per graph (default 20)")
    add("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed runs per graph first")
    add("--e2e-requests", type=int, default=200, help="timed end-to-end requests")
    add("--e2e-warmup", type=int, default=20, help="untimed end-to-end requests first")
    add("--skip-peers", action="store_true", help="measure Atrium only")
    add("--skip-postgres", action="store_true", help="SQLite only")
    add("--skip-e2e", action="store_true", help="no atrium serve")
    add("--max-foreign-cores", type=float, default=0.25, help="quiet: other work under this")
    add("--quiet-timeout", type=float, default=60.0, help="longest wait for quiet (s), per case")
    add("--start-quiet-timeout", type=float, default=600.0, help="longest wait (s) before all")
    add("--json", type=Path, default=None, help="also write the whole result here")
    add("--no-write", action="store_true", help="print the tables, write no result files")
    return parser.parse_args()


def main() -> None:
    """Measure Atrium, then the peers; write the results and refresh the README."""
    args = parse_args()
    options = Options(args.repetitions, args.warmup, args.max_foreign_cores, args.quiet_timeout)
    started = time.monotonic()
    versions = {n: package_version(n) for n in ("dbos", "sqlalchemy", "aiosqlite", "asyncpg")}
    facts = machine_facts(AtriumSource(), **versions, jinja2=package_version("jinja2"))
    print(f"waiting up to {args.start_quiet_timeout:.0f} s for a quiet machine", flush=True)
    quiet = wait_for_quiet(args.max_foreign_cores, 2.0, args.start_quiet_timeout)
    atrium = measure_atrium(options, postgres=not args.skip_postgres)
    e2e = None if args.skip_e2e else measure_e2e(args.e2e_requests, args.e2e_warmup, options)
    peers: list[JSONDict] = []
    if not args.skip_peers:
        peers = run_peers(
            args.repetitions,
            warmup=args.warmup,
            max_foreign_cores=args.max_foreign_cores,
            quiet_timeout=args.quiet_timeout,
        )
    data: JSONDict = {
        "name": NAME,
        "machine": facts,
        "settings": {
            "repetitions": args.repetitions,
            "warmup": args.warmup,
            "blocks": BLOCKS,
            "fanout": f"{BRANCHES} branches of {BRANCH_LENGTH}",
            "transform": TRANSFORM,
            "e2e_blocks": E2E_BLOCKS,
            "max_foreign_cores": args.max_foreign_cores,
            "quiet_timeout_s": args.quiet_timeout,
            "start_quiet_wait": quiet,
        },
        "atrium": atrium,
        "pure_marginal": marginal_pure(atrium),
        "e2e": e2e,
        "peers": peers,
        "wall_minutes": round((time.monotonic() - started) / 60, 1),
    }
    text = markdown(data)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if not args.no_write:
        json_path, md_path = write_results(NAME, data, text)
        print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    run_main(main)
