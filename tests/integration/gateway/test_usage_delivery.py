"""The usage consumer's delivery: on Redis an event is acknowledged only once its usage is
committed, and an event delivered twice is counted once (dedup by event id)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select, text

from atrium.bus import InProcessEventBus, RedisStreamsEventBus, RequestCompleted
from atrium.gateway.budgets import Budget, BudgetExceededError, InProcessSpendLedger
from atrium.gateway.usage import UsageRecorder, usage_event
from atrium.store import Database
from atrium.store.usage import UsageEventSeenRow, UsageRepository
from tests.integration._delivery import CrashGroup, drained, settle, until

pytestmark = pytest.mark.integration

CONSUMER = Path(__file__).parent / "_usage_consumer_process.py"


def completed(n: int, key: str = "key-a") -> RequestCompleted:
    return RequestCompleted(
        model="smollm2", key_id=key, team_id="team-a", prompt_tokens=n, completion_tokens=1,
        latency_ms=1.0, status=500 if n % 10 == 0 else 200, stream=False,
        endpoint="chat.completions", cost_usd=0.001,
    )  # fmt: skip


async def totals(usage: UsageRepository) -> dict[str, tuple[int, int, int, float]]:
    """Requests, errors, prompt tokens and spend (rounded) per key."""
    return {
        line.group: (line.requests, line.errors, line.prompt_tokens, round(line.spend_usd, 6))
        for line in await usage.report("key")
    }


def expected(events: list[RequestCompleted]) -> tuple[int, int, int, float]:
    return (
        len(events),
        sum(e.status >= 400 for e in events),
        sum(e.prompt_tokens for e in events),
        round(sum(e.cost_usd for e in events), 6),
    )


async def seen_ids(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(UsageEventSeenRow)) or 0)


async def test_an_event_is_counted_once_however_often_it_is_added(database: Database) -> None:
    usage = UsageRepository(database)
    events = [completed(n) for n in range(1, 21)]
    counted = [
        await usage.add_events([usage_event(e) for e in [*events[:10], *events[:3]]]),
        await usage.add_events([usage_event(e) for e in events[5:]]),  # 5 seen, 10 new
        await usage.add_events([usage_event(e) for e in events]),
    ]

    assert counted == [10, 10, 0]
    assert await totals(usage) == {"key-a": expected(events)}
    assert round(await usage.spend_since("team:team-a", None), 6) == 0.02
    # A budget ledger seeded from the table sees each request's cost once.
    ledger = InProcessSpendLedger(usage.spend_since)
    await ledger.check([Budget("key:key-a", "key 'a'", 0.0205, "day")])
    with pytest.raises(BudgetExceededError):
        await ledger.check([Budget("team:team-a", "team 'a'", 0.0195, "month")])

    # Pruned ids are forgotten: only ids older than the cut go.
    assert await usage.prune_seen(datetime.now(UTC) - timedelta(days=7)) == 0
    assert await seen_ids(database) == 20
    assert await usage.prune_seen(datetime.now(UTC) + timedelta(seconds=1)) == 20
    assert await seen_ids(database) == 0


async def test_racing_writers_count_each_event_once(database: Database) -> None:
    # On PostgreSQL separate repositories and connections, as separate consumers would be.
    writers = [UsageRepository(database) for _ in range(4)]
    events = [completed(n) for n in range(1, 41)]

    async def write(usage: UsageRepository) -> int:
        counted = 0
        for n in range(0, len(events), 8):
            counted += await usage.add_events([usage_event(e) for e in events[n : n + 8]])
        return counted

    counted = await asyncio.gather(*(write(usage) for usage in writers))

    assert sum(counted) == len(events)
    assert await totals(writers[0]) == {"key-a": expected(events)}


async def test_the_handler_returns_once_its_usage_is_committed(
    database: Database, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    redis, prefix = shared_redis
    usage = UsageRepository(database)
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20)
    # A flush interval no test waits for: only a commit for a waiting handler writes in time.
    recorder = UsageRecorder(bus, usage, flush_seconds=3600)
    await recorder.start()
    try:
        first = completed(1)
        await recorder.record(first)
        assert await totals(usage) == {"key-a": expected([first])}  # before it returned

        sent = [completed(n) for n in range(2, 152)]
        for event in [*sent, *sent[:10]]:  # ten published twice (a retried publish)
            await bus.publish(event)
        stream = bus.stream_name(RequestCompleted.type)
        await until(lambda: drained(redis, stream))
        # Acknowledged means counted: nothing waits for a later flush.
        assert await totals(usage) == {"key-a": expected([first, *sent])}
    finally:
        await recorder.close()
        await bus.close()

    assert await totals(usage) == {"key-a": expected([first, *sent])}
    assert await seen_ids(database) == 1 + len(sent)
    spent = round(await usage.spend_since("key:key-a", first.occurred_at.date()), 6)
    assert spent == round(0.001 * (1 + len(sent)), 6)


async def test_in_process_the_handler_sums_and_returns(database: Database) -> None:
    # In process an event dies with the process, acknowledged or not: nothing to wait for.
    usage = UsageRepository(database)
    bus = InProcessEventBus()
    recorder = UsageRecorder(bus, usage, flush_seconds=3600)
    await recorder.start()
    try:
        event = completed(1)
        await asyncio.wait_for(recorder.record(event), 1.0)
        assert await totals(usage) == {}  # summed, written with the next flush
        await recorder.flush()
        assert await totals(usage) == {"key-a": expected([event])}
    finally:
        await recorder.close()
        await bus.close()
    assert await seen_ids(database) == 0


async def test_consumer_killed_before_the_commit_leaves_its_events_to_another_once(
    empty_postgres_url: str, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    redis, prefix = shared_redis
    db = Database(empty_postgres_url)
    await db.migrate()
    usage = UsageRepository(db)
    sent = [completed(n) for n in range(1, 6)]
    # The first was counted by a consumer that then died before acknowledging it.
    await usage.add_events([usage_event(sent[0])])
    crash = await CrashGroup.publish(redis, prefix, "usage", sent)

    survivor: UsageRecorder | None = None
    try:
        async with db.engine.connect() as lock:
            # Held here, the lock keeps the doomed consumer's insert of seen ids waiting.
            await lock.execute(text("LOCK TABLE usage_events_seen IN SHARE MODE"))
            await crash.kill_consumer(CONSUMER, empty_postgres_url, len(sent))
            await lock.rollback()  # releases the table lock
        # Nothing of the doomed one's was counted.
        assert await totals(usage) == {"key-a": expected(sent[:1])}

        survivor = UsageRecorder(crash.bus, usage, flush_seconds=0.05)
        await survivor.start()
        await settle(lambda: crash.pending(0))
    finally:
        if survivor is not None:
            await survivor.close()
        await crash.bus.close()
        counted = await totals(usage)
        spent = await usage.spend_since("team:team-a", None)
        await db.close()

    assert counted == {"key-a": expected(sent)}
    assert round(spent, 6) == round(0.001 * len(sent), 6)
    assert await crash.bus.dead_letters() == []


async def test_the_recorder_prunes_old_seen_ids(
    database: Database, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    redis, prefix = shared_redis
    usage = UsageRepository(database)
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20)
    recorder = UsageRecorder(
        bus, usage, flush_seconds=0.05, seen_retention=timedelta(0), prune_every_seconds=0
    )
    await recorder.start()
    try:
        await recorder.record(completed(1))
        await until(lambda: no_seen_ids(database))
    finally:
        await recorder.close()
        await bus.close()
    assert await totals(usage) == {"key-a": expected([completed(1)])}


async def no_seen_ids(db: Database) -> bool:
    return await seen_ids(db) == 0
