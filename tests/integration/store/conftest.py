"""Fixtures for the store: a migrated Database on SQLite and on real PostgreSQL.

PostgreSQL must run at 127.0.0.1:5432 with trust auth for user ``postgres``. One
throwaway database is created per test session and dropped at the end; its
schema is emptied after every test so that each one starts from nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from atrium.store import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend; PostgreSQL is only touched when asked for."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atrium.db'}"
    url: str = request.getfixturevalue("empty_postgres_url")
    return url


@pytest_asyncio.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated Database, closed after the test."""
    db = Database(database_url, pool_size=2)
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()


class StepClock:
    """A clock that moves one second forward each time it is read."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(seconds=1)
        return current


@pytest.fixture
def clock() -> Callable[[], datetime]:
    """A deterministic clock starting at 2030-01-01T00:00:00Z."""
    return StepClock(datetime(2030, 1, 1, tzinfo=UTC))
