"""The audit consumer's delivery: an event is acknowledged only once its entry is
committed, and an event delivered twice is recorded once (dedup by event id)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from atrium.audit import AuditFilter, AuditRecorder, AuditRepository, NewAuditEntry
from atrium.audit.recorder import inference_entry
from atrium.bus import InProcessEventBus, RedisStreamsEventBus, RequestCompleted
from atrium.store import Database
from atrium.store.audit import _APPEND_LOCK_ID
from tests.integration._delivery import CrashGroup, drained, settle, until

pytestmark = pytest.mark.integration

CONSUMER = Path(__file__).parent / "_audit_consumer_process.py"


def completed(n: int) -> RequestCompleted:
    return RequestCompleted(
        model="smollm2", key_id=f"key-{n}", prompt_tokens=n, completion_tokens=n,
        latency_ms=1.0, status=200, stream=False, endpoint="chat.completions",
    )  # fmt: skip


def admin_entry(n: int, entry_id: str | None) -> NewAuditEntry:
    return NewAuditEntry(
        action="POST /v1/admin/keys", target=f"/v1/admin/keys/{n}", outcome="success",
        actor="key-a", id=entry_id,
    )  # fmt: skip


async def stored_ids(repo: AuditRepository) -> list[str]:
    return [entry.id for entry in await repo.query(AuditFilter(limit=1000))]


async def test_an_entry_whose_id_is_stored_is_not_appended_again(database: Database) -> None:
    repo = AuditRepository(database)
    first = await repo.append([admin_entry(1, "a" * 32), admin_entry(2, "a" * 32),
                               admin_entry(3, "b" * 32)])  # fmt: skip
    again = await repo.append([admin_entry(4, "b" * 32), admin_entry(5, None)])
    nothing = await repo.append([admin_entry(6, "a" * 32)])

    assert [e.target for e in first] == ["/v1/admin/keys/1", "/v1/admin/keys/3"]
    assert [e.target for e in again] == ["/v1/admin/keys/5"]
    assert nothing == []
    ids = await stored_ids(repo)
    assert ids[:2] == ["a" * 32, "b" * 32]
    assert len(ids) == 3
    report = await repo.verify()
    assert (report.ok, report.checked) == (True, 3)


async def test_racing_appenders_store_each_id_once(database: Database) -> None:
    # On PostgreSQL separate repositories (no shared lock), as separate processes would be.
    shared = AuditRepository(database)
    writers = [shared if database.is_sqlite else AuditRepository(database) for _ in range(4)]
    ids = [uuid4().hex for _ in range(20)]

    async def write(repo: AuditRepository) -> None:
        for n in range(0, len(ids), 4):
            await repo.append([admin_entry(m, ids[m]) for m in range(n, n + 4)])

    await asyncio.gather(*(write(repo) for repo in writers))

    assert sorted(await stored_ids(shared)) == sorted(ids)
    assert (await shared.verify()).ok


async def test_the_handler_returns_once_its_entry_is_committed(
    database: Database, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    redis, prefix = shared_redis
    repo = AuditRepository(database)
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20)
    # A flush interval no test waits for: only a commit for a waiting handler writes in time.
    recorder = AuditRecorder(repo, bus=bus, flush_seconds=3600)
    await recorder.start()
    try:
        event = completed(0)
        await recorder.record_request(event)
        assert await stored_ids(repo) == [event.id]  # written before the handler returned

        sent = [completed(n) for n in range(1, 151)]
        for item in [*sent, *sent[:10]]:  # ten published twice (a retried publish)
            await bus.publish(item)
        stream = bus.stream_name(RequestCompleted.type)

        async def settled() -> bool:
            written = len(await stored_ids(repo)) == 1 + len(sent)
            return written and await drained(redis, stream)

        await until(settled)
    finally:
        await recorder.close()
        await bus.close()

    ids = await stored_ids(repo)
    assert sorted(ids) == sorted([event.id, *(e.id for e in sent)])
    assert (await repo.verify()).ok


async def test_in_process_the_handler_queues_the_entry_and_returns(database: Database) -> None:
    # In process an event dies with the process, acknowledged or not: nothing to wait for.
    repo = AuditRepository(database)
    bus = InProcessEventBus()
    recorder = AuditRecorder(repo, bus=bus, flush_seconds=0.05)
    await recorder.start()
    try:
        event = completed(0)
        await asyncio.wait_for(recorder.record_request(event), 1.0)
        await bus.publish(completed(1))
        await until(lambda: has_rows(repo, 2))
    finally:
        await recorder.close()
        await bus.close()


async def has_rows(repo: AuditRepository, count: int) -> bool:
    return len(await stored_ids(repo)) == count


async def test_consumer_killed_before_the_commit_leaves_the_event_to_another_once(
    empty_postgres_url: str, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    redis, prefix = shared_redis
    db = Database(empty_postgres_url)
    await db.migrate()
    repo = AuditRepository(db)
    sent = [completed(n) for n in range(3)]
    # The first was written by a consumer that then died before acknowledging it.
    await repo.append([inference_entry(sent[0])])
    crash = await CrashGroup.publish(redis, prefix, "audit", sent)

    survivor: AuditRecorder | None = None
    try:
        async with db.engine.connect() as lock:
            # Held here, the chain's lock keeps the doomed consumer's write from committing.
            await lock.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _APPEND_LOCK_ID})
            await crash.kill_consumer(CONSUMER, empty_postgres_url, len(sent))
            await lock.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _APPEND_LOCK_ID})
            await lock.commit()
        assert await stored_ids(repo) == [sent[0].id]  # nothing of the doomed one's was written

        survivor = AuditRecorder(repo, bus=crash.bus, flush_seconds=0.05)
        await survivor.start()

        async def settled() -> bool:
            return await crash.pending(0) and len(await stored_ids(repo)) >= len(sent)

        await settle(settled)
    finally:
        if survivor is not None:
            await survivor.close()
        await crash.bus.close()
        ids = await stored_ids(repo)
        report = await repo.verify()
        await db.close()

    assert sorted(ids) == sorted(event.id for event in sent)
    assert report.ok
    assert await crash.bus.dead_letters() == []


def test_an_event_id_too_long_for_the_log_gets_a_fresh_one() -> None:
    event = completed(1).model_copy(update={"id": "x" * 40})
    assert inference_entry(event).id is None
    assert inference_entry(completed(2)).id is not None
