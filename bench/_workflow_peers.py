"""The peers of the workflow-engine benchmark: LangGraph, DBOS and graphon, on this machine.

Each peer is installed with pinned versions into its own throwaway virtual environment
under ``bench/.work/peers/workflow/<peer>/.venv`` (reused while the installed versions
match the pins; nothing goes into Atrium's environment or ``pyproject.toml``) and runs a
standalone script from ``bench/peers_workflow/`` with that environment's python. A script
runs one graph shape on one storage ``repetitions`` times (after a few untimed runs) and
prints one JSON line; :func:`run_peers` runs them one at a time, each after a quiet wait,
and turns each line into a result row.

Every graph has 50 trivial blocks (``x -> x + 1``), so the time is the engine's:

- ``chain``: 50 blocks in sequence; ``fanout``: 10 parallel branches of 5 blocks;
- ms per block = wall time of one whole graph, start to result, divided by 50 (p50 and
  p99 over the repetitions); ``block_gap`` = start of a block to the start of the next
  in the same branch (persisting and scheduling included), over every block;
- LangGraph: ``StateGraph`` + ``SqliteSaver`` (file), ``durability="sync"``, and with no
  checkpointer for the engine alone; DBOS: ``@DBOS.step`` calls in one workflow (fan-out:
  10 child workflows) on SQLite in its default journal mode, on SQLite in WAL mode, and
  on a throwaway PostgreSQL database; graphon: code nodes, no persistence, timed both to
  the result and until ``run()`` returns.

    .venv/bin/python bench/_workflow_peers.py --repetitions 20    # a table, no files
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import (
    BENCH_DIR,
    LOOPBACK,
    WORK_DIR,
    ForeignLoad,
    JSONDict,
    ManagedProcess,
    log_tail,
    managed,
    markdown_table,
    ms,
    run_main,
    wait_for_quiet,
)

SCRIPTS = BENCH_DIR / "peers_workflow"
VENVS = WORK_DIR / "peers" / "workflow"
RUNS_DIR = WORK_DIR / "workflow_peers"
PG_SERVER = f"postgresql://postgres@{LOOPBACK}:5432"
INSTALL_TIMEOUT_S = 1200
DEFAULT_WARMUP = 3


@dataclass(frozen=True)
class PeerPackage:
    """A peer engine: its pinned distributions and its script."""

    name: str
    label: str
    pins: tuple[str, ...]
    script: str

    @property
    def venv(self) -> Path:
        """Its throwaway virtual environment."""
        return VENVS / self.name / ".venv"

    @property
    def python(self) -> Path:
        """The environment's python."""
        return self.venv / "bin" / "python"

    @property
    def wanted(self) -> dict[str, str]:
        """Distribution name -> pinned version."""
        return dict(pin.split("==", 1) for pin in self.pins)


PACKAGES = {
    "langgraph": PeerPackage(
        "langgraph",
        "LangGraph",
        ("langgraph==1.2.24", "langgraph-checkpoint-sqlite==3.1.2"),
        "langgraph_chain.py",
    ),
    "dbos": PeerPackage("dbos", "DBOS", ("dbos==3.4.0",), "dbos_chain.py"),
    "graphon": PeerPackage("graphon", "graphon (Dify)", ("graphon==0.1.2",), "graphon_chain.py"),
}


@dataclass(frozen=True)
class PeerRun:
    """One peer script invocation: an engine, a shape, a storage and what to say about it."""

    engine: str
    shape: str
    storage: str
    notes: str


_LG_SYNC = (
    'SqliteSaver on a file (the saver sets journal_mode=WAL; synchronous FULL), durability="sync"'
    ", fresh thread_id per run"
)
_LG_NONE = "no checkpointer: nothing persisted (the engine alone)"
_DBOS_SQLITE = "DBOS's own SQLite system database (journal_mode DELETE, synchronous FULL)"
_DBOS_WAL = "custom system_database_engine: journal_mode=WAL, synchronous=NORMAL"
_DBOS_PG = f"throwaway database on {LOOPBACK}:5432"
_DBOS_FAN = "; 10 child workflows (DBOS.start_workflow) of 5 steps each"
_GRAPHON = "code nodes (in-process executor) + Start/End, no persistence; time to the result"

RUNS: tuple[PeerRun, ...] = (
    PeerRun("langgraph", "chain", "sqlite-wal", _LG_SYNC),
    PeerRun("langgraph", "fanout", "sqlite-wal", _LG_SYNC),
    PeerRun("langgraph", "chain", "none", _LG_NONE),
    PeerRun("langgraph", "fanout", "none", _LG_NONE),
    PeerRun("dbos", "chain", "sqlite-wal", _DBOS_WAL),
    PeerRun("dbos", "chain", "sqlite", _DBOS_SQLITE),
    PeerRun("dbos", "chain", "postgres", _DBOS_PG),
    PeerRun("dbos", "fanout", "sqlite-wal", _DBOS_WAL + _DBOS_FAN),
    PeerRun("dbos", "fanout", "sqlite", _DBOS_SQLITE + _DBOS_FAN),
    PeerRun("dbos", "fanout", "postgres", _DBOS_PG + _DBOS_FAN),
    PeerRun("graphon", "chain", "none", _GRAPHON),
    PeerRun("graphon", "fanout", "none", _GRAPHON),
)


# -- installing -----------------------------------------------------------------------


def installed_versions(package: PeerPackage) -> dict[str, str | None]:
    """The pinned distributions' versions in the peer's environment (None: missing)."""
    if not package.python.is_file():
        return dict.fromkeys(package.wanted)
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try:\n        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n        return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    done = subprocess.run(
        [str(package.python), "-c", code, *package.wanted],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        return dict.fromkeys(package.wanted)
    versions: dict[str, str | None] = json.loads(done.stdout)
    return versions


def _run_logged(argv: list[str], log: Path, timeout: float) -> None:
    """Run an install step, appending its output to ``log``; fail with the log's end."""
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if done.returncode != 0:
        msg = f"{argv[0]} failed ({done.returncode}); end of {log}:\n{log_tail(log)}"
        raise RuntimeError(msg)


def install(package: PeerPackage) -> JSONDict:
    """``python3 -m venv`` and ``pip install`` the pins, unless already there."""
    started = time.monotonic()
    reused = installed_versions(package) == package.wanted
    if not reused:
        folder = package.venv.parent
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        log = folder / "install.log"
        _run_logged([sys.executable, "-m", "venv", str(package.venv)], log, timeout=300)
        pip = [str(package.python), "-m", "pip", "install", "--disable-pip-version-check"]
        _run_logged([*pip, *package.pins], log, timeout=INSTALL_TIMEOUT_S)
        found = installed_versions(package)
        if found != package.wanted:
            msg = f"{package.name}: installed {found}, wanted {package.wanted}"
            raise RuntimeError(msg)
    return {
        "package": " + ".join(package.pins),
        "venv": str(package.venv),
        "reused_install": reused,
        "install_s": round(time.monotonic() - started, 1),
    }


# -- a throwaway PostgreSQL database ----------------------------------------------------


def _pg_admin(server_url: str, statement: str) -> None:
    """One statement on the server's ``postgres`` database, outside a transaction."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(f"{server_url}/postgres")
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    """Create a database for one run and drop it afterwards; yields its URL."""
    name = f"atrium_bench_peer_{secrets.token_hex(4)}"
    _pg_admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url}/{name}"
    finally:
        _pg_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- running ----------------------------------------------------------------------------


def _last_json(log: Path) -> JSONDict:
    """The script's result: the last line of its output that is a JSON object."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                found: JSONDict = json.loads(line)
            except json.JSONDecodeError:
                continue
            return found
    msg = f"no JSON line in {log}:\n{log_tail(log)}"
    raise RuntimeError(msg)


def run_script(
    run: PeerRun, repetitions: int, warmup: int, folder: Path, database_url: str | None
) -> JSONDict:
    """Run one peer script as a child in its own session; its JSON line."""
    package = PACKAGES[run.engine]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = [
        str(package.python),
        str(SCRIPTS / package.script),
        f"--shape={run.shape}",
        f"--storage={run.storage}",
        f"--repetitions={repetitions}",
        f"--warmup={warmup}",
        f"--workdir={folder}",
    ]
    if database_url is not None:
        argv.append(f"--database-url={database_url}")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    process = ManagedProcess(f"{run.engine} peer", argv, folder / "output.log", env, folder)
    timeout = 120 + 3 * (repetitions + warmup)
    with managed(process):
        assert process.process is not None
        try:
            code = process.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise process.fail(f"ran over {timeout} s") from exc
        if code != 0:
            raise process.fail(f"exited with {code}")
    return _last_json(process.log_path)


def _row(run: PeerRun, facts: JSONDict, out: JSONDict, foreign: float, wall_s: float) -> JSONDict:
    """A result row from a script's JSON line."""
    per_block = out["ms_per_block_summary"]
    gaps = out.get("block_gap_ms", {})
    notes = run.notes
    row: JSONDict = {
        "engine": run.engine,
        "label": PACKAGES[run.engine].label,
        "shape": run.shape,
        "storage": run.storage,
        "ms_per_block_p50": per_block["p50"],
        "ms_per_block_p99": per_block["p99"],
        "blocks_per_s": round(1000 / per_block["p50"], 1),
        "block_gap_ms_p50": gaps.get("p50"),
        "block_gap_ms_p99": gaps.get("p99"),
    }
    if "ms_per_block_until_return_summary" in out:
        until = out["ms_per_block_until_return_summary"]
        row["ms_per_block_until_return_p50"] = until["p50"]
        row["ms_per_block_until_return_p99"] = until["p99"]
        notes += (
            f"; until run() returns {until['p50']:.2f} ms/block "
            f"(shutdown {out['shutdown_ms_p50']:.0f} ms)"
        )
    return row | {
        "notes": notes,
        "package": facts["package"],
        "repetitions": out["repetitions"],
        "warmup": out["warmup"],
        "foreign_cores_during": foreign,
        "wall_s": round(wall_s, 2),
        "error": None,
        "detail": out,
        "install": facts,
    }


def _failed_row(run: PeerRun, error: str) -> JSONDict:
    """A row for a peer that could not be installed or run (the run goes on)."""
    return {
        "engine": run.engine,
        "label": PACKAGES[run.engine].label,
        "shape": run.shape,
        "storage": run.storage,
        "ms_per_block_p50": None,
        "ms_per_block_p99": None,
        "blocks_per_s": None,
        "notes": run.notes,
        "error": error,
    }


def measure_run(
    run: PeerRun,
    facts: JSONDict,
    repetitions: int,
    warmup: int,
    *,
    max_foreign_cores: float,
    quiet_timeout: float,
    pg_server: str,
) -> JSONDict:
    """Wait for a quiet machine, run one peer script, and make its row."""
    folder = RUNS_DIR / f"{run.engine}-{run.shape}-{run.storage}"
    quiet = wait_for_quiet(max_foreign_cores, timeout_s=quiet_timeout)
    meter = ForeignLoad().start()
    started = time.monotonic()
    if run.storage == "postgres":
        with throwaway_database(pg_server) as url:
            out = run_script(run, repetitions, warmup, folder, url)
    else:
        out = run_script(run, repetitions, warmup, folder, None)
    row = _row(run, facts, out, meter.stop(), time.monotonic() - started)
    row["quiet_wait"] = quiet
    return row


def run_peers(
    repetitions: int,
    *,
    warmup: int = DEFAULT_WARMUP,
    engines: Sequence[str] | None = None,
    max_foreign_cores: float = 0.25,
    quiet_timeout: float = 60.0,
    pg_server: str = PG_SERVER,
) -> list[JSONDict]:
    """Install the peers (or reuse them) and run every shape and storage; one row each.

    A peer that fails to install or run gets a row with ``error`` set and None numbers;
    the others still run.
    """
    chosen = [run for run in RUNS if engines is None or run.engine in engines]
    installs: dict[str, JSONDict | str] = {}
    rows: list[JSONDict] = []
    for run in chosen:
        if run.engine not in installs:
            try:
                installs[run.engine] = install(PACKAGES[run.engine])
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                installs[run.engine] = f"install failed: {exc}"
        facts = installs[run.engine]
        if isinstance(facts, str):
            rows.append(_failed_row(run, facts))
            continue
        try:
            row = measure_run(
                run,
                facts,
                repetitions,
                warmup,
                max_foreign_cores=max_foreign_cores,
                quiet_timeout=quiet_timeout,
                pg_server=pg_server,
            )
        except (RuntimeError, OSError, KeyError) as exc:
            row = _failed_row(run, f"{type(exc).__name__}: {exc}")
        print(_progress(row), file=sys.stderr, flush=True)
        rows.append(row)
    return rows


# -- presenting -------------------------------------------------------------------------


def _progress(row: JSONDict) -> str:
    where = f"{row['label']} {row['shape']} {row['storage']}"
    if row.get("error"):
        return f"peer {where}: FAILED {row['error'][:300]}"
    return (
        f"peer {where}: {row['ms_per_block_p50']:.3f} ms/block p50, "
        f"{row['ms_per_block_p99']:.3f} p99 (other work {row['foreign_cores_during']:.2f} cores)"
    )


def peer_table(rows: Sequence[JSONDict]) -> str:
    """The peers' rows as a Markdown table."""
    headers = [
        "engine",
        "shape",
        "storage",
        "ms/block p50",
        "ms/block p99",
        "blocks/s",
        "block gap p50",
        "block gap p99",
        "other work (cores)",
        "notes",
    ]
    body: list[list[str]] = []
    for row in rows:
        if row.get("error"):
            cells = ["-"] * 6 + [f"failed: {row['error'][:200]}".replace("\n", " ")]
        else:
            cells = [
                ms(row["ms_per_block_p50"], 3),
                ms(row["ms_per_block_p99"], 3),
                ms(row["blocks_per_s"], 0),
                ms(row["block_gap_ms_p50"], 3),
                ms(row["block_gap_ms_p99"], 3),
                ms(row["foreign_cores_during"], 2),
                row["notes"],
            ]
        body.append([row["label"], row["shape"], row["storage"], *cells])
    return markdown_table(headers, body)


def main() -> None:
    """Run the peers alone and print their table (no result files are written)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--engines", default=",".join(PACKAGES), help="comma-separated")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    rows = run_peers(args.repetitions, warmup=args.warmup, engines=args.engines.split(","))
    print(peer_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
