"""DBOS, once per process: the durable execution under workflows and the release pipeline.

DBOS keeps one registry and one system database per process (it is built that way), so
:class:`DbosProcess` creates it for the first user and destroys it after the last. Users
register their configured instances (:class:`dbos.DBOSConfiguredInstance`) before
:meth:`DbosProcess.launch`, which recovers the unfinished workflows of every one of them.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, DBOSConfiguredInstance
from sqlalchemy import event

from atrium.core.errors import InvalidRequestError

__all__ = ["DbosProcess", "forget_instance"]


class DbosProcess:
    """DBOS's process-wide lifecycle: launched by the first engine, destroyed by the last."""

    _lock = threading.Lock()
    _users = 0
    _url: str | None = None

    @classmethod
    def acquire(cls, system_database_url: str, executor_id: str) -> bool:
        """Create DBOS for this process (or join the one on the same database); True: first."""
        with cls._lock:
            if cls._users and cls._url != system_database_url:
                msg = "one process runs one workflow system database; it is already launched"
                raise InvalidRequestError(msg, param="workflows.system_database_url")
            if cls._users == 0:
                DBOS(config=_dbos_config(system_database_url, executor_id))
                cls._url = system_database_url
            cls._users += 1
            return cls._users == 1

    @classmethod
    def launch(cls) -> None:
        """Launch once the engine has bound itself (recovery needs the binding)."""
        with cls._lock:
            DBOS.launch()

    @classmethod
    def release(cls) -> None:
        """Drop one user; the last one destroys DBOS (keeping the decorated functions)."""
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                DBOS.destroy(destroy_registry=False)
                cls._url = None


def _dbos_config(url: str, executor_id: str) -> DBOSConfig:
    out = DBOSConfig(
        name="atrium",
        system_database_url=url,
        executor_id=executor_id,
        log_level="WARNING",
    )
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer at a time, and threads queueing for the
        # pool's connection wake the moment it is free, where threads racing for the
        # database's write lock back off in sleeps (parallel steps: 3.6 -> 2.3 ms a block).
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False},
            pool_size=1,
            max_overflow=0,
            pool_timeout=300,
        )

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _: Any) -> None:
            # WAL: readers never block the writer, and a commit is one fsync-free append
            # (synchronous=NORMAL keeps it durable across a process crash).
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        out["system_database_engine"] = engine
    return out


def forget_instance(binding: DBOSConfiguredInstance) -> None:
    # DBOS has no public way to forget a configured instance; a later engine of the
    # same name (a restarted platform in one process) must be able to bind again.
    from dbos._dbos import _get_or_create_dbos_registry

    registry = _get_or_create_dbos_registry()
    key = f"{type(binding).__module__}.{type(binding).__qualname__}/{binding.config_name}"
    for name in [
        n for n, inst in registry.instance_info_map.items() if inst is binding or n == key
    ]:
        del registry.instance_info_map[name]
