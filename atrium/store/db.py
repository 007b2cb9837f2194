"""The database handle: one async engine, its sessions, and migrations on start."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_ID: Final = 0x617472_69756D
_SQLITE_BUSY_TIMEOUT_MS: Final = 5000


class Database:
    """An SQLAlchemy async engine and session factory for SQLite or PostgreSQL.

    ``url`` is an async SQLAlchemy URL (``sqlite+aiosqlite:///path`` or
    ``postgresql+asyncpg://user@host/db``). Call :meth:`migrate` once on start and
    :meth:`close` on shutdown.
    """

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        parsed = make_url(url)
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        if self._is_sqlite:
            _ensure_sqlite_parent(parsed.database)
            self._engine = create_async_engine(parsed, echo=echo)
            event.listen(self._engine.sync_engine, "connect", _configure_sqlite)
        else:
            # pre_ping: a replica behind Cloud SQL's proxy sees idle connections cut.
            self._engine = create_async_engine(
                parsed, echo=echo, pool_size=pool_size, pool_pre_ping=True
            )
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite store."""
        return self._is_sqlite

    @property
    def engine(self) -> AsyncEngine:
        """The underlying engine, for code that needs a raw connection."""
        return self._engine

    def session(self) -> AsyncSession:
        """A new session; use it as ``async with db.session() as session:``."""
        return self._sessions()

    async def insert(self, row: object, conflict: Exception) -> None:
        """Add ``row`` and commit; a unique or foreign-key violation raises ``conflict``.

        The session is rolled back first, so nothing of the row is left behind.
        """
        async with self.session() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError as exc:
                await session.rollback()
                raise conflict from exc

    async def migrate(self) -> None:
        """Apply every Alembic migration up to head; a no-op when already there."""
        async with self._engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def ping(self) -> bool:
        """Whether the database answers a trivial query."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            return False
        return True

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()


def alembic_config(connection: Connection) -> Config:
    """An Alembic config for the packaged migrations, bound to ``connection``."""
    config = Config()
    # configparser interpolates '%', which may appear in an install path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # API replicas start together; the lock makes the others wait, then see head.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    command.upgrade(alembic_config(connection), "head")


def _ensure_sqlite_parent(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed while one writer commits; SQLite leaves foreign
    # keys off unless asked, per connection; busy_timeout waits out a held lock
    # instead of failing at once with "database is locked".
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()
