"""Fixtures for integration tests: a throwaway database on the real PostgreSQL.

PostgreSQL must run at 127.0.0.1:5432 with trust auth for user ``postgres``. One
throwaway database is created per test session and dropped at the end; its
schema is emptied after every test that asks for ``empty_postgres_url``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from atrium.store import Database
from tests.integration.azurite import Azurite, running_azurite
from tests.integration.moto_s3 import MotoS3, running_moto

# Its checks report values in a failing test, as a test module's own do.
pytest.register_assert_rewrite("tests.integration._delivery")

PG_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"


async def _run_autocommit(database: str, *statements: str) -> None:
    engine = create_async_engine(f"{PG_SERVER}/{database}", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """The URL of a fresh PostgreSQL database, dropped when the session ends."""
    name = f"atrium_test_{secrets.token_hex(6)}"
    await _run_autocommit("postgres", f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        await _run_autocommit("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture
async def empty_postgres_url(postgres_url: str) -> AsyncIterator[str]:
    """The session's PostgreSQL database, emptied again after the test."""
    yield postgres_url
    name = postgres_url.rsplit("/", 1)[1]
    await _run_autocommit(name, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend; PostgreSQL is only touched when asked for."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atrium.db'}"
    url: str = request.getfixturevalue("empty_postgres_url")
    return url


@pytest_asyncio.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated Database on each backend, closed after the test."""
    db = Database(database_url, pool_size=4)
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A real S3 API (moto) on loopback with the buckets ``atrium-kb`` and ``atrium-releases``."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with running_moto(("atrium-kb", "atrium-releases"), log) as server:
        yield server


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A real Azure Blob API (Azurite) on loopback with the container ``atrium-docs``."""
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with running_azurite(("atrium-docs",), log) as server:
        yield server


@pytest.fixture
async def shared_redis() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A client of the real Redis and a key prefix of this test's own (its keys are
    deleted afterwards), for tests whose replicas or processes share one Redis."""
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    prefix = f"atrium-test:{uuid4().hex}:"
    yield client, prefix
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
