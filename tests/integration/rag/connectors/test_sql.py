"""SQL sources on a SQLite file and on the real PostgreSQL: rows, read-only, errors."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from atrium.core.netguard import NetworkPolicy
from atrium.rag.connectors import (
    ConnectorError,
    DocumentFailure,
    InvalidSourceError,
    SqlSource,
    build_connector,
)
from atrium.rag.types import SourceDocument
from atrium.store import Database
from atrium.store.secrets import SecretStore, generate_key

pytestmark = pytest.mark.integration

LOOPBACK = NetworkPolicy(allowed_hosts=("127.0.0.1",))
ROWS = [
    (1, "First", "Body one: with a colon.", "2030-01-01T00:00:00+00:00", "en"),
    (2, "Second", "Body two.", "2030-01-02T00:00:00+00:00", "fr"),
    (3, None, "No title.", None, None),
]
TEMPLATE = "{title}\n\n{body}"


@pytest_asyncio.fixture
async def secrets(tmp_path: Path) -> AsyncIterator[SecretStore]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", pool_size=1)
    try:
        await db.migrate()
        yield SecretStore(db, generate_key())
    finally:
        await db.close()


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "warehouse.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE docs (id INTEGER, title TEXT, body TEXT, updated TEXT, lang TEXT)"
        )
        conn.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", ROWS)
        conn.execute("INSERT INTO docs VALUES (NULL, 'orphan', 'no id', NULL, NULL)")
        conn.execute("INSERT INTO docs VALUES (2, 'again', 'same id', NULL, NULL)")
    conn.close()
    return path


@pytest_asyncio.fixture
async def postgres_table(empty_postgres_url: str) -> str:
    """A plain postgresql:// URL of a database holding the ``docs`` table."""
    engine = create_async_engine(empty_postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE docs (id integer, title text, body text, "
                    "updated timestamptz, lang text)"
                )
            )
            await conn.execute(
                text("INSERT INTO docs VALUES (:id, :title, :body, :updated, :lang)"),
                [
                    {
                        "id": r[0],
                        "title": r[1],
                        "body": r[2],
                        "lang": r[4],
                        "updated": datetime.fromisoformat(r[3]) if r[3] else None,
                    }
                    for r in ROWS
                ],
            )
    finally:
        await engine.dispose()
    return empty_postgres_url.replace("postgresql+asyncpg://", "postgresql://")


def _spec(**fields: Any) -> SqlSource:
    defaults: dict[str, Any] = {
        "query": "SELECT id, title, body, updated, lang FROM docs ORDER BY id",
        "id_column": "id",
        "template": TEMPLATE,
        "title_column": "title",
        "updated_column": "updated",
        "metadata_columns": ["lang"],
    }
    return SqlSource.model_validate(defaults | fields)


async def _collect(
    spec: SqlSource, data_dir: Path, secrets: SecretStore, policy: NetworkPolicy = LOOPBACK
) -> list[SourceDocument | DocumentFailure]:
    connector = build_connector(
        spec, secrets=secrets, data_dir=data_dir, policy=policy, max_document_bytes=10_000
    )
    async with aclosing(connector.documents()) as documents:
        return [item async for item in documents]


def _check_rows(items: list[SourceDocument | DocumentFailure]) -> None:
    documents = [i for i in items if isinstance(i, SourceDocument)]
    assert [d.key for d in documents] == ["1", "2", "3"]
    first = documents[0]
    assert first.data == b"First\n\nBody one: with a colon."
    assert first.filename == "1.txt"
    assert first.media_type == "text/plain"
    assert first.title == "First"
    assert first.updated_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert first.metadata == {"lang": "en"}
    assert documents[2].data == b"\n\nNo title."
    assert documents[2].title is None
    assert documents[2].metadata == {}


async def test_sqlite_rows_become_documents(sqlite_file: Path, secrets: SecretStore) -> None:
    items = await _collect(_spec(url="sqlite:///warehouse.db"), sqlite_file.parent, secrets)
    _check_rows(items)
    failures = [(i.key, i.reason) for i in items if isinstance(i, DocumentFailure)]
    assert failures == [("row 1", "id is NULL"), ("2", "another row has the same id")]


async def test_sqlite_is_opened_read_only(sqlite_file: Path, secrets: SecretStore) -> None:
    # Opened read-write, SQLite would create a missing file; read-only, it refuses.
    spec = _spec(url="sqlite:///missing.db")
    with pytest.raises(ConnectorError, match=r"cannot connect to the database at .*missing\.db"):
        await _collect(spec, sqlite_file.parent, secrets)
    assert not (sqlite_file.parent / "missing.db").exists()
    before = os.stat(sqlite_file).st_mtime_ns
    await _collect(_spec(url="sqlite:///warehouse.db"), sqlite_file.parent, secrets)
    assert os.stat(sqlite_file).st_mtime_ns == before
    assert os.listdir(sqlite_file.parent) == ["warehouse.db"]


async def test_a_sqlite_file_outside_the_data_dir_is_refused(
    sqlite_file: Path, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = _spec(url=f"sqlite:///{sqlite_file}")
    with pytest.raises(InvalidSourceError, match="outside"):
        await _collect(spec, tmp_path / "elsewhere", secrets)


async def test_postgres_rows_stream_as_documents(
    postgres_table: str, tmp_path: Path, secrets: SecretStore
) -> None:
    query = "SELECT id, title, body, updated, lang FROM docs WHERE id IS NOT NULL ORDER BY id"
    items = await _collect(_spec(url=postgres_table, query=query), tmp_path, secrets)
    _check_rows(items)


async def test_postgres_many_rows_through_the_cursor(
    postgres_table: str, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = SqlSource(
        url=postgres_table,
        query="SELECT n AS id, 'row ' || n AS body, n::text || '::cast' AS tag "
        "FROM generate_series(1, 5000) AS n",
        id_column="id",
        template="{body} {tag}",
    )
    items = await _collect(spec, tmp_path, secrets)
    assert len(items) == 5000
    last = items[-1]
    assert isinstance(last, SourceDocument)
    assert last.data == b"row 5000 5000::cast"


async def test_postgres_runs_the_query_read_only(
    postgres_table: str, tmp_path: Path, secrets: SecretStore
) -> None:
    query = "WITH gone AS (DELETE FROM docs RETURNING *) SELECT id, body FROM gone"
    spec = SqlSource(url=postgres_table, query=query, id_column="id", template="{body}")
    with pytest.raises(ConnectorError, match="read-only transaction"):
        await _collect(spec, tmp_path, secrets)
    engine = create_async_engine(postgres_table.replace("postgresql://", "postgresql+asyncpg://"))
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM docs"))).scalar() == 3
    await engine.dispose()


async def test_the_url_can_come_from_a_secret_and_its_password_never_shows(
    postgres_table: str, tmp_path: Path, secrets: SecretStore
) -> None:
    await secrets.put("warehouse", postgres_table)
    items = await _collect(_spec(url_secret="warehouse"), tmp_path, secrets)
    assert len([i for i in items if isinstance(i, SourceDocument)]) == 3
    database = postgres_table.rsplit("/", 1)[1]
    await secrets.put("warehouse", f"postgresql://nobody:hunter2@127.0.0.1:5432/{database}")
    with pytest.raises(ConnectorError, match="cannot connect to the database at") as caught:
        await _collect(_spec(url_secret="warehouse"), tmp_path, secrets)
    assert "hunter2" not in str(caught.value)
    assert "nobody:***@127.0.0.1" in str(caught.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("postgresql://postgres@127.0.0.1:1/db", "cannot connect to the database at"),
        ("postgresql://postgres@db.invalid/db", "cannot resolve db.invalid"),
        ("postgresql://postgres@localhost/db", "loopback"),
        ("postgresql:///db?host=/var/run/postgresql", "must name exactly one host"),
        ("mysql://root@127.0.0.1/db", "is not a PostgreSQL or SQLite file URL"),
        ("sqlite://", "is not a PostgreSQL or SQLite file URL"),
    ],
)
async def test_bad_urls_fail_quickly_with_a_reason(
    tmp_path: Path, secrets: SecretStore, url: str, error: str
) -> None:
    spec = _spec(url=url, connect_timeout_seconds=2)
    with pytest.raises(ConnectorError, match=error):
        await _collect(spec, tmp_path, secrets)


async def test_missing_columns_are_named(
    postgres_table: str, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = _spec(url=postgres_table, query="SELECT id, body FROM docs")
    with pytest.raises(ConnectorError, match=r"returns no column 'title' \(in title_column\)") as e:
        await _collect(spec, tmp_path, secrets)
    assert str(e.value).endswith("'updated' (in updated_column); it returns ['id', 'body']")


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM docs",
        "INSERT INTO docs VALUES (9)",
        "DROP TABLE docs",
        "SELECT 1; DROP TABLE docs",
        "SELECT 1 /* ; */ ; UPDATE docs SET body = ''",
        "  -- a comment\n  UPDATE docs SET body = ''",
        "COPY docs TO '/tmp/out'",
        "SELECT $$ unterminated",
    ],
)
def test_anything_but_one_select_is_refused(query: str) -> None:
    with pytest.raises(ValidationError, match="query"):
        _spec(url="sqlite:///x.db", query=query)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT ';' AS semi, id FROM docs;",
        "  (SELECT id FROM docs)",
        "WITH t AS (SELECT 1 AS id) SELECT * FROM t",
        "SELECT $x$ ; $x$ AS dollar, E'it\\'s; fine' AS e -- trailing ; comment",
        "/* leading ; comment */ select id from docs",
    ],
)
def test_single_selects_are_accepted(query: str) -> None:
    assert _spec(url="sqlite:///x.db", query=query).query == query


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"url": None}, "exactly one of url and url_secret"),
        ({"url": "sqlite:///x.db", "url_secret": "s"}, "exactly one of url and url_secret"),
        ({"url": "postgresql://u:pw@host/db"}, "in a secret"),
        ({"url": "sqlite:///x.db", "template": "{title.__class__}"}, "stray"),
    ],
)
def test_invalid_specs_are_refused(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        _spec(**fields)
