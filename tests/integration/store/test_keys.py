"""ApiKeyRepository and Database, run identically on SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection

from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.store import ApiKeyRepository, ApiKeyRow, Base, Database, Scope, hash_key
from atrium.store.db import MIGRATIONS_DIR, alembic_config

_config = Config()
_config.set_main_option("script_location", str(MIGRATIONS_DIR))
HEAD = ScriptDirectory.from_config(_config).get_current_head()


pytestmark = pytest.mark.integration

Clock = Callable[[], datetime]
START = datetime(2030, 1, 1, tzinfo=UTC)
KNOWN_SECRET = "atr-bootstrap-0123456789abcdef"


@pytest.fixture
def repo(database: Database, clock: Clock) -> ApiKeyRepository:
    return ApiKeyRepository(database, clock=clock)


async def _table_names(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _revision(database: Database) -> str | None:
    async with database.engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


# --- Database ---------------------------------------------------------------------------


async def test_migrate_twice_is_a_no_op(database: Database) -> None:
    key = (await ApiKeyRepository(database).create(name="kept")).record
    await database.migrate()
    assert await ApiKeyRepository(database).list() == [key]
    assert await _revision(database) == HEAD
    assert {"api_keys", "alembic_version"} <= await _table_names(database)


async def test_migration_matches_the_orm_tables(database: Database) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []


async def test_downgrade_drops_the_table_and_upgrade_restores_it(database: Database) -> None:
    def downgrade(sync: Connection) -> None:
        command.downgrade(alembic_config(sync), "base")

    async with database.engine.begin() as conn:
        await conn.run_sync(downgrade)
    assert "api_keys" not in await _table_names(database)
    await database.migrate()
    assert "api_keys" in await _table_names(database)


MIGRATE_IN_A_NEW_PROCESS = """
import asyncio, sys
from atrium.store import Database

async def main() -> None:
    db = Database(sys.argv[1], pool_size=1)
    try:
        await db.migrate()
    finally:
        await db.close()

asyncio.run(main())
"""


async def test_replicas_migrating_at_once_on_postgresql_all_succeed(
    empty_postgres_url: str,
) -> None:
    # Separate processes, as API replicas are: the advisory lock has to serialise them.
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MIGRATE_IN_A_NEW_PROCESS,
            empty_postgres_url,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(60):
        results = [await process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, results
    db = Database(empty_postgres_url)
    try:
        assert await _revision(db) == HEAD
    finally:
        await db.close()


async def test_ping(database: Database) -> None:
    assert await database.ping() is True


async def test_ping_is_false_when_nothing_listens() -> None:
    db = Database("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        assert await db.ping() is False
    finally:
        await db.close()


async def test_sqlite_creates_its_directory_and_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "atrium.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        assert db.is_sqlite
        await db.migrate()
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
    finally:
        await db.close()
    assert path.is_file()


# --- create and find --------------------------------------------------------------------


async def test_create_returns_a_prefixed_secret_that_finds_the_key(
    repo: ApiKeyRepository,
) -> None:
    new = await repo.create(name="ci", owner="team-a")
    assert new.secret.startswith("atr-")
    assert len(new.secret) > 40
    assert new.record.display_prefix == new.secret[:12]
    assert new.record.scopes == frozenset({Scope.INFERENCE})
    assert new.record.created_at == START
    assert new.secret not in repr(new)
    found = await repo.find_by_secret(new.secret)
    assert found == new.record


async def test_custom_prefix(database: Database) -> None:
    new = await ApiKeyRepository(database, prefix="sk-test-").create(name="x")
    assert new.secret.startswith("sk-test-")


async def test_the_store_holds_the_hash_not_the_secret(
    repo: ApiKeyRepository, database: Database
) -> None:
    new = await repo.create(name="ci")
    async with database.session() as session:
        row = await session.get(ApiKeyRow, new.record.id)
    assert row is not None
    assert row.key_hash == hash_key(new.secret) != new.secret
    assert len(row.key_hash) == 64
    stored = [getattr(row, column.key) for column in ApiKeyRow.__table__.columns]
    assert all(new.secret not in str(value) for value in stored)


async def test_unknown_secret_finds_nothing(repo: ApiKeyRepository) -> None:
    new = await repo.create(name="ci")
    assert await repo.find_by_secret(new.secret + "x") is None
    assert await repo.find_by_secret("") is None


async def test_imported_secret_is_found(repo: ApiKeyRepository) -> None:
    new = await repo.create(name="bootstrap", scopes={Scope.ADMIN}, secret=KNOWN_SECRET)
    assert new.secret == KNOWN_SECRET
    found = await repo.find_by_secret(KNOWN_SECRET)
    assert found is not None
    assert found.scopes == frozenset({Scope.ADMIN})
    assert found.display_prefix == KNOWN_SECRET[:12]


async def test_everything_round_trips(repo: ApiKeyRepository) -> None:
    expires = START + timedelta(days=30)
    new = await repo.create(
        name="full",
        owner="ops",
        scopes=[Scope.ADMIN, Scope.INFERENCE],
        allowed_models={"smollm2-135m", "default"},
        rpm=60,
        tpm=10_000,
        expires_at=expires,
    )
    got = await repo.get(new.record.id)
    assert got == new.record
    assert got.allowed_models == frozenset({"smollm2-135m", "default"})
    assert (got.rpm, got.tpm, got.expires_at) == (60, 10_000, expires)


async def test_datetimes_come_back_timezone_aware_in_utc(repo: ApiKeyRepository) -> None:
    plus_two = timezone(timedelta(hours=2))
    expires = datetime(2031, 6, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    new = await repo.create(name="tz", expires_at=expires)
    await repo.revoke(new.record.id)
    for key in (new.record, await repo.get(new.record.id)):
        assert key.expires_at == expires
        assert key.expires_at is not None
        assert key.expires_at.tzinfo is UTC
        assert key.expires_at.hour == 12
        assert key.created_at.tzinfo is UTC
    revoked = await repo.get(new.record.id)
    assert revoked.revoked_at is not None
    assert revoked.revoked_at.tzinfo is UTC


async def test_allowed_models_none_is_stored_as_sql_null(
    repo: ApiKeyRepository, database: Database
) -> None:
    new = await repo.create(name="any")
    async with database.engine.connect() as conn:
        nulls = await conn.scalar(
            select(func.count())
            .select_from(ApiKeyRow)
            .where(ApiKeyRow.__table__.c.allowed_models.is_(None))
        )
    assert nulls == 1
    assert (await repo.get(new.record.id)).allowed_models is None


# --- validation -------------------------------------------------------------------------


BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("name", {"name": ""}),
    ("name", {"name": "   "}),
    ("name", {"name": "n" * 201}),
    ("owner", {"owner": "o" * 201}),
    ("rpm", {"rpm": 0}),
    ("tpm", {"tpm": -5}),
    ("expires_at", {"expires_at": START - timedelta(days=1)}),
    ("expires_at", {"expires_at": START}),
    ("expires_at", {"expires_at": datetime(2031, 1, 1)}),  # naive on purpose
    ("scopes", {"scopes": frozenset()}),
    ("scopes", {"scopes": ["root"]}),
    ("allowed_models", {"allowed_models": [""]}),
    ("secret", {"secret": "too-short"}),
]


@pytest.mark.parametrize(("param", "overrides"), BAD_INPUTS)
async def test_bad_input_is_rejected_and_nothing_is_written(
    repo: ApiKeyRepository, param: str, overrides: dict[str, Any]
) -> None:
    await repo.create(name="existing")
    arguments: dict[str, Any] = {"name": "k"} | overrides
    with pytest.raises(InvalidRequestError) as caught:
        await repo.create(**arguments)
    assert caught.value.param == param
    assert caught.value.status == 400
    assert await repo.count() == 1


async def test_duplicate_imported_secret_is_rejected_and_nothing_is_written(
    repo: ApiKeyRepository,
) -> None:
    first = await repo.create(name="first", secret=KNOWN_SECRET)
    with pytest.raises(InvalidRequestError) as caught:
        await repo.create(name="second", secret=KNOWN_SECRET)
    assert caught.value.param == "secret"
    assert await repo.count() == 1
    assert await repo.list() == [first.record]
    # The session was rolled back cleanly: the repository still works.
    await repo.create(name="third")
    assert await repo.count() == 2


# --- get, list, revoke ------------------------------------------------------------------


async def test_get_unknown_id_is_not_found(repo: ApiKeyRepository) -> None:
    with pytest.raises(NotFoundError) as caught:
        await repo.get("0" * 32)
    assert caught.value.status == 404


async def test_list_is_ordered_by_creation_and_can_leave_out_revoked(
    repo: ApiKeyRepository,
) -> None:
    assert await repo.list() == []
    names = ["c-first", "a-second", "b-third"]
    keys = [(await repo.create(name=name)).record for name in names]
    await repo.revoke(keys[1].id)
    assert [key.name for key in await repo.list()] == names
    assert [key.name for key in await repo.list(include_revoked=False)] == ["c-first", "b-third"]
    assert await repo.count() == 3


async def test_revoke_sets_revoked_at_once_and_deactivates(repo: ApiKeyRepository) -> None:
    key = (await repo.create(name="k")).record
    assert key.is_active(START + timedelta(days=1))
    first = await repo.revoke(key.id)
    assert first.revoked_at is not None
    assert first.revoked_at > key.created_at
    again = await repo.revoke(key.id)
    assert again.revoked_at == first.revoked_at
    assert not again.is_active(START + timedelta(days=1))


async def test_revoke_unknown_id_is_not_found(repo: ApiKeyRepository) -> None:
    with pytest.raises(NotFoundError):
        await repo.revoke("missing")
    assert await repo.count() == 0


async def test_revoked_key_is_still_found_but_inactive(repo: ApiKeyRepository) -> None:
    new = await repo.create(name="k")
    await repo.revoke(new.record.id)
    found = await repo.find_by_secret(new.secret)
    assert found is not None
    assert not found.is_active(START + timedelta(seconds=5))


# --- the record -------------------------------------------------------------------------


async def test_expired_key_is_inactive(repo: ApiKeyRepository) -> None:
    expires = START + timedelta(hours=1)
    key = (await repo.create(name="short", expires_at=expires)).record
    assert key.is_active(expires - timedelta(microseconds=1))
    assert not key.is_active(expires)
    assert not key.is_active(expires + timedelta(days=1))


async def test_allows_model(repo: ApiKeyRepository) -> None:
    unrestricted = (await repo.create(name="all")).record
    restricted = (await repo.create(name="one", allowed_models=["smollm2-135m"])).record
    admin_only = (await repo.create(name="admin", scopes={Scope.ADMIN}, allowed_models=[])).record
    assert unrestricted.allows_model("anything")
    assert restricted.allows_model("smollm2-135m")
    assert not restricted.allows_model("other")
    assert not admin_only.allows_model("smollm2-135m")


async def test_to_public_is_json_safe_and_has_no_secret_or_hash(repo: ApiKeyRepository) -> None:
    new = await repo.create(
        name="pub", scopes={Scope.INFERENCE, Scope.ADMIN}, allowed_models={"b", "a"}
    )
    public = new.record.to_public()
    encoded = json.dumps(public)
    assert new.secret not in encoded
    assert hash_key(new.secret) not in encoded
    assert not {"key_hash", "secret", "hash"} & public.keys()
    assert public["scopes"] == ["admin", "inference"]
    assert public["allowed_models"] == ["a", "b"]
    assert public["created_at"] == "2030-01-01T00:00:00+00:00"
    assert public["revoked_at"] is None
    assert public["display_prefix"] == new.secret[:12]
