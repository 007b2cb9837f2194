"""DBOS Transact: a workflow of 50 trivial ``@DBOS.step`` calls, durable in its system database.

Run with the peer's own python (``dbos``)::

    python dbos_chain.py --shape chain --storage sqlite-wal --workdir /tmp/x
    python dbos_chain.py --storage postgres --database-url postgresql://postgres@127.0.0.1:5432/db

- ``chain``: one workflow calling 50 steps in sequence, each ``x + 1``; DBOS records each
  step's output in ``operation_outputs`` before the step call returns, so a step's output
  is durable before the next step starts.
- ``fanout``: one workflow that starts 10 child workflows (``DBOS.start_workflow``), each
  calling 5 steps in sequence, and waits for their results (the handles' futures). DBOS
  runs the children on its thread pool.
- ``sqlite``: ``system_database_url = sqlite:///<file>``, as DBOS configures it (rollback
  journal ``DELETE``, ``synchronous`` FULL).
- ``sqlite-wal``: a ``system_database_engine`` of our own whose connect hook does what
  DBOS's own does (``IMMEDIATE`` transactions, ``busy_timeout``, ``foreign_keys``) and sets
  ``journal_mode=WAL`` and ``synchronous=NORMAL``.
- ``postgres``: ``system_database_url`` = ``--database-url`` (a throwaway database the
  harness creates and drops).
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _timing import BLOCKS, BRANCH_LENGTH, BRANCHES, BlockClock, arguments, emit, measure
from dbos import DBOS, DBOSConfig
from sqlalchemy import event

CLOCK = BlockClock()
STORAGES = ("sqlite-wal", "sqlite", "postgres")


@DBOS.step()
def block(x: int, branch: int) -> int:
    """One trivial block."""
    CLOCK.mark(branch)
    return x + 1


@DBOS.workflow()
def chain(x: int) -> int:
    """50 steps in sequence."""
    for _ in range(BLOCKS):
        x = block(x, 0)
    return x


@DBOS.workflow()
def branch(x: int, index: int) -> int:
    """One branch of the fan-out: 5 steps in sequence."""
    for _ in range(BRANCH_LENGTH):
        x = block(x, index)
    return x


@DBOS.workflow()
def fanout(x: int) -> list[int]:
    """10 child workflows at once, then their results."""
    handles = [DBOS.start_workflow(branch, x, index) for index in range(BRANCHES)]
    return [handle.get_result() for handle in handles]


def wal_engine(path: Path) -> sa.Engine:
    """A SQLite engine set up as DBOS's own, plus WAL and ``synchronous=NORMAL``."""
    engine = sa.create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine


def config_for(storage: str, workdir: Path, database_url: str | None) -> DBOSConfig:
    """DBOS's settings for one storage."""
    config: DBOSConfig = {"name": "atrium-bench-peer", "log_level": "WARNING"}
    path = workdir / "dbos_system.sqlite"
    if storage == "sqlite":
        config["system_database_url"] = f"sqlite:///{path}"
    elif storage == "sqlite-wal":
        config["system_database_engine"] = wal_engine(path)
    else:
        if not database_url:
            msg = "--database-url is needed for postgres"
            raise SystemExit(msg)
        config["system_database_url"] = database_url
    return config


def sqlite_pragmas(storage: str, workdir: Path) -> dict[str, Any]:
    """What a fresh connection of the kind DBOS used reports (journal mode persists)."""
    if storage == "postgres":
        return {}
    path = workdir / "dbos_system.sqlite"
    engine = wal_engine(path) if storage == "sqlite-wal" else sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return {
                "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
                "synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar(),
            }
    finally:
        engine.dispose()


def main() -> None:
    """Measure one shape on one storage and print the JSON line."""
    args = arguments("DBOS, 50 trivial steps", STORAGES)
    workdir = Path(args.workdir)
    config = config_for(args.storage, workdir, args.database_url)
    DBOS(config=config)
    DBOS.launch()
    try:
        if args.shape == "chain":
            run_once, expected = (lambda _i: chain(0)), BLOCKS
        else:
            run_once, expected = (lambda _i: fanout(0)), [BRANCH_LENGTH] * BRANCHES

        def check(result: Any) -> None:
            if result != expected:
                msg = f"unexpected result {result!r}"
                raise RuntimeError(msg)

        measured = measure(run_once, check, CLOCK, args.repetitions, args.warmup)
    finally:
        DBOS.destroy()
        engine = config.get("system_database_engine")
        if engine is not None:
            engine.dispose()
    emit(
        {
            "engine": "dbos",
            "shape": args.shape,
            "storage": args.storage,
            "repetitions": args.repetitions,
            "warmup": args.warmup,
            "versions": {name: importlib.metadata.version(name) for name in ("dbos", "sqlalchemy")},
            "settings": {
                "system_database": "custom engine (WAL, synchronous=NORMAL)"
                if args.storage == "sqlite-wal"
                else config.get("system_database_url"),
                "sqlite_pragmas": sqlite_pragmas(args.storage, workdir),
                "fanout": "10 child workflows via DBOS.start_workflow"
                if args.shape == "fanout"
                else None,
            },
            **measured,
        }
    )


if __name__ == "__main__":
    logging.getLogger("dbos").setLevel(logging.WARNING)
    main()
