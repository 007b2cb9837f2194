"""The audit log's hash chain on SQLite and PostgreSQL: appends, queries, tampering, races."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from atrium.store import Base, Database
from atrium.store.audit import (
    GENESIS,
    AuditFilter,
    AuditRepository,
    ChainHead,
    NewAuditEntry,
    entry_hash,
)
from atrium.store.db import alembic_config

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def entry(n: int, *, actor: str = "key-a", action: str = "POST /v1/admin/keys") -> NewAuditEntry:
    return NewAuditEntry(
        action=action,
        target=f"/v1/admin/keys/{n}",
        outcome="success",
        actor=actor,
        address="127.0.0.1",
        detail={"status": 201, "n": n, "latency_ms": 1.25, "nested": {"b": 1, "a": [1, 2]}},
        at=T0 + timedelta(minutes=n),
    )


async def test_entries_chain_onto_each_other_and_verify(database: Database) -> None:
    repo = AuditRepository(database)

    first = await repo.append([entry(0)])
    rest = await repo.append([entry(1), entry(2)])

    chain = first + rest
    assert [e.seq for e in chain] == [1, 2, 3]
    assert chain[0].prev_hash == GENESIS
    assert [e.prev_hash for e in chain[1:]] == [e.hash for e in chain[:-1]]
    assert chain[2].hash == entry_hash(chain[1].hash, 3, chain[2].id, entry(2))
    report = await repo.verify()
    assert (report.ok, report.checked) == (True, 3)
    stored = await repo.query(AuditFilter())
    assert stored == chain  # read back exactly as hashed (times, floats, key order)


async def test_a_tampered_row_is_named(database: Database) -> None:
    repo = AuditRepository(database)
    chain = await repo.append([entry(n) for n in range(5)])

    async with database.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET outcome = 'denied' WHERE seq = 3"))

    report = await repo.verify()
    assert not report.ok
    assert (report.first_bad_seq, report.first_bad_id, report.checked) == (3, chain[2].id, 2)
    assert "altered" in (report.reason or "")


async def test_a_rehashed_row_breaks_the_next_link_and_a_deleted_row_is_missed(
    database: Database,
) -> None:
    repo = AuditRepository(database)
    chain = await repo.append([entry(n) for n in range(5)])
    # A forger who changes row 2 and recomputes its own hash: row 3's link no longer fits.
    async with database.engine.begin() as conn:
        await conn.execute(
            text("UPDATE audit_log SET actor = 'someone-else', hash = :h WHERE seq = 2"),
            {"h": entry_hash(chain[0].hash, 2, chain[1].id, _with_actor(entry(1), "someone-else"))},
        )
    report = await repo.verify()
    assert (report.first_bad_seq, report.checked) == (3, 2)
    assert "previous row" in (report.reason or "")

    async with database.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE seq IN (2, 3)"))
    report = await repo.verify()
    assert report.first_bad_seq == 4
    assert "missing" in (report.reason or "")


def _with_actor(new: NewAuditEntry, actor: str) -> NewAuditEntry:
    return NewAuditEntry(
        action=new.action, target=new.target, outcome=new.outcome, actor=actor,
        address=new.address, detail=new.detail, at=new.at,
    )  # fmt: skip


async def test_query_filters_and_pages(database: Database) -> None:
    repo = AuditRepository(database)
    await repo.append(
        [
            entry(0, actor="key-a", action="POST /v1/admin/keys"),
            entry(1, actor="key-b", action="DELETE /v1/admin/keys/{key_id}"),
            entry(2, actor="key-a", action="DELETE /v1/admin/secrets/{name}"),
            entry(3, actor="key-a", action="inference.chat.completions"),
        ]
    )

    by_actor = await repo.query(AuditFilter(actor="key-a"))
    deletes = await repo.query(AuditFilter(action="DELETE /v1/admin"))
    window = await repo.query(
        AuditFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    )
    page = await repo.query(AuditFilter(after_seq=2, limit=1))
    underscore = await repo.query(AuditFilter(action="inference_"))
    exported = [e.seq async for e in repo.export(AuditFilter(limit=3))]
    newest = await repo.query(AuditFilter(newest_first=True, limit=2))
    older = await repo.query(AuditFilter(newest_first=True, before_seq=3, limit=2))
    exported_before = [e.seq async for e in repo.export(AuditFilter(before_seq=4, limit=2))]

    assert [e.seq for e in by_actor] == [1, 3, 4]
    assert [e.seq for e in deletes] == [2, 3]
    assert [e.seq for e in window] == [2, 3]
    assert [e.seq for e in page] == [3]
    assert underscore == []  # LIKE wildcards in the filter are taken literally
    assert exported == [1, 2, 3, 4]
    assert [e.seq for e in newest] == [4, 3]
    assert [e.seq for e in older] == [2, 1]
    assert exported_before == [1, 2, 3]


async def test_concurrent_appenders_keep_one_chain(database: Database) -> None:
    # On PostgreSQL separate repositories (no shared in-process lock), as separate
    # processes would be; SQLite has one writing process, whose tasks share one.
    shared = AuditRepository(database)
    writers = [shared if database.is_sqlite else AuditRepository(database) for _ in range(4)]

    async def write(repo: AuditRepository, w: int) -> None:
        for n in range(10):
            await repo.append([entry(w * 100 + n), entry(w * 100 + n + 50)])

    await asyncio.gather(*(write(repo, w) for w, repo in enumerate(writers)))

    report = await writers[0].verify()
    assert (report.ok, report.checked) == (True, 80)


async def test_migration_0013_matches_the_orm_and_downgrades(database: Database) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert [d for d in diff if "audit_log" in repr(d)] == []

    def downgrade(sync: Connection) -> None:
        command.downgrade(alembic_config(sync), "0012")

    async with database.engine.begin() as conn:
        await conn.run_sync(downgrade)
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "audit_log" not in names
    await database.migrate()


async def test_target_and_outcome_filters(database: Database) -> None:
    repo = AuditRepository(database)
    denied = replace(entry(2), outcome="denied")
    await repo.append([entry(0), entry(1), denied, replace(entry(3), target="/v1/admin/keys_x")])

    one_key = await repo.query(AuditFilter(target="/v1/admin/keys/1"))
    keys = await repo.query(AuditFilter(target="/v1/admin/keys/"))
    refused = await repo.query(AuditFilter(outcome="denied"))
    both = await repo.query(AuditFilter(target="/v1/admin/keys/", outcome="success"))
    literal = await repo.query(AuditFilter(target="/v1/admin/keys_"))

    assert [e.seq for e in one_key] == [2]
    assert [e.seq for e in keys] == [1, 2, 3]
    assert [e.seq for e in refused] == [3]
    assert [e.seq for e in both] == [1, 2]
    assert [e.seq for e in literal] == [4]  # "_" is no wildcard: keys/0.. do not match


async def test_rows_cut_off_the_end_are_found_against_a_head_seen_before(
    database: Database,
) -> None:
    repo = AuditRepository(database)
    chain = await repo.append([entry(n) for n in range(5)])
    seen = await repo.verify()
    assert seen.head == ChainHead(5, chain[-1].hash)
    assert (await repo.verify(ChainHead(5, chain[-1].hash))).ok
    assert (await repo.verify(ChainHead(3, chain[2].hash))).ok  # an older head still fits

    async with database.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE seq >= 4"))

    alone = await repo.verify()
    cut = await repo.verify(ChainHead(5, chain[-1].hash))
    assert alone.ok  # what is left is a valid chain: only the head seen before shows the cut
    assert not cut.ok
    assert (cut.first_bad_seq, cut.first_bad_id, cut.checked) == (4, None, 3)
    assert "cut off the end" in (cut.reason or "")
    assert cut.to_public()["head"] == {"seq": 3, "hash": chain[2].hash}


async def test_a_chain_rewritten_up_to_the_head_is_found(database: Database) -> None:
    repo = AuditRepository(database)
    chain = await repo.append([entry(n) for n in range(3)])
    # A forger who rewrites the whole log consistently: every link fits again.
    async with database.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_log"))
    forged = await repo.append([entry(n) for n in range(3)])
    assert (await repo.verify()).ok

    report = await repo.verify(ChainHead(3, chain[-1].hash))

    assert (report.ok, report.first_bad_seq, report.first_bad_id) == (False, 3, forged[-1].id)
    assert "rewritten" in (report.reason or "")
