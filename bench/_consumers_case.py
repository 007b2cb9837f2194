"""The durable consumers part of ``events_bus.py``: one case, end to end.

Publishes ``request.completed`` events on a Redis Streams bus to one or more replica
processes of the production audit and usage consumers (``_durable_consumers.py``), which
write to a throwaway PostgreSQL database; measures how fast the events are committed and
how long each takes from its XADD to each group's XACK, and fails unless every event is
counted exactly once. ``events_bus.py``'s docstring says what each number spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from uuid import uuid4

import redis.asyncio as aioredis
from _common import (
    BENCH_DIR,
    WORK_DIR,
    ForeignLoad,
    JSONDict,
    ManagedProcess,
    summary,
    tree_cpu_seconds,
)
from _durable_consumers import clock
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from atrium.audit.recorder import GROUP as AUDIT_GROUP
from atrium.bus import RedisStreamsEventBus
from atrium.bus._redis_consumer import as_text
from atrium.bus.events import RequestCompleted
from atrium.gateway.usage import GROUP as USAGE_GROUP
from atrium.store import Database
from atrium.store.audit import AuditRow
from atrium.store.tables import UsageRow
from atrium.store.usage import UsageEventSeenRow

PG_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
#: The durable consumer groups of ``request.completed``, one of each per replica.
DURABLE_GROUPS = (AUDIT_GROUP, USAGE_GROUP)
POLL_S = 0.02  # how often the consumers' part looks for the end of a case


async def _autocommit(database: str, statement: str) -> None:
    engine = create_async_engine(f"{PG_SERVER}/{database}", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _throwaway_database() -> AsyncIterator[tuple[str, Database]]:
    """A new PostgreSQL database, migrated as the tests' ``database`` fixture does; its URL
    and a small ``Database`` on it for the bench's own queries. Dropped after."""
    name = f"atrium_bench_{uuid4().hex[:12]}"
    url = f"{PG_SERVER}/{name}"
    await _autocommit("postgres", f'CREATE DATABASE "{name}"')
    db = Database(url, pool_size=2)
    try:
        await db.migrate()
        yield url, db
    finally:
        await db.close()
        await _autocommit("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def consumers_case(
    replicas: int, events: int, rate: float | None, make_event: Callable[[], RequestCompleted]
) -> JSONDict:
    """Publish ``events`` (at ``rate``/s, or flat out) to ``replicas`` processes of durable
    consumers (``_durable_consumers.py``) writing to a new PostgreSQL database; how fast
    they are committed and how long each takes to be acknowledged by each group. Each
    event is ``make_event()``, all with the same prompt tokens."""
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    prefix = f"atrium-bench:{uuid4().hex}:"
    bus = RedisStreamsEventBus(client, stream_prefix=prefix)
    stream = bus.stream_name(RequestCompleted.type)
    async with _throwaway_database() as (url, db):
        with tempfile.TemporaryDirectory(prefix="atrium-bench-") as tmp:
            outs = [Path(tmp) / f"acks-{n}.json" for n in range(replicas)]
            processes = [_consumer_process(n, url, prefix, out) for n, out in enumerate(outs)]
            try:
                for process in processes:
                    process.start()
                for process in processes:
                    await _ready(process)
                pids = [p.pid for p in processes]
                sent, event_ids, row = await _publish_until_acked(
                    bus, client, db, stream, (events, rate, make_event), pids
                )
            finally:
                for process in processes:
                    process.stop()
                await bus.close()
                keys = [key async for key in client.scan_iter(match=prefix + "*")]
                if keys:
                    await client.delete(*keys)
                await client.aclose()
            acks = [_acks_of(process, out) for process, out in zip(processes, outs, strict=True)]
        row |= await _counted_once(db, event_ids, make_event().prompt_tokens)
    latencies, repeated = _ack_latencies(sent, acks)
    return {
        "replicas": replicas,
        "events": events,
        "rate": rate,
        **row,
        "latency_ms": {name: summary(values, digits=3) for name, values in latencies.items()},
        "acked_again": repeated,
    }


def _consumer_process(n: int, url: str, prefix: str, out: Path) -> ManagedProcess:
    """A replica's durable consumers on the database at ``url``; they write ``out``."""
    argv = [sys.executable, str(BENCH_DIR / "_durable_consumers.py"), url, prefix, str(out)]
    log = WORK_DIR / "events_bus" / f"durable_consumers_{n}.log"
    return ManagedProcess(f"durable consumers {n}", argv, log)


async def _ready(process: ManagedProcess, limit_s: float = 120.0) -> None:
    """Wait for the process's ``ready`` line (both consumers in their groups)."""
    deadline = time.monotonic() + limit_s
    while "ready" not in process.log_path.read_text().split():
        if not process.alive():
            raise process.fail("exited before it was ready")
        if time.monotonic() > deadline:
            raise process.fail(f"was not ready after {limit_s:.0f} s")
        await asyncio.sleep(0.1)


async def _publish_until_acked(
    bus: RedisStreamsEventBus,
    client: aioredis.Redis,
    db: Database,
    stream: str,
    load: tuple[int, float | None, Callable[[], RequestCompleted]],
    pids: list[int],
) -> tuple[dict[str, float], list[str], JSONDict]:
    """Publish, then wait until every event is committed (the audit entries and the usage
    ids all in the database) and acknowledged by both groups (nothing pending, the last
    entry delivered); each event's clock just before its XADD, by entry id."""
    events, rate, make_event = load
    sent: dict[str, float] = {}
    event_ids: list[str] = []
    meter = ForeignLoad().start()
    cpu0, consumers_cpu0 = time.process_time(), sum(tree_cpu_seconds(pid) for pid in pids)
    started = clock()
    for n in range(events):
        if rate is not None:
            await asyncio.sleep(max(0.0, started + n / rate - clock()))
        event = make_event()
        before = clock()
        sent[await bus.publish(event)] = before
        event_ids.append(event.id)
    published = clock() - started
    last = max(sent, key=lambda entry: tuple(int(part) for part in entry.split("-")))
    committed = await _poll(lambda: _all_committed(db, events), "committed") - started
    acked = await _poll(lambda: _all_acked(client, stream, last), "acknowledged") - started
    cpu = time.process_time() - cpu0
    consumers_cpu = sum(tree_cpu_seconds(pid) for pid in pids) - consumers_cpu0
    return sent, event_ids, {
        "events_per_s": round(events / committed, 1),
        "events_per_s_acked": round(events / acked, 1),
        "publish_per_s": round(events / published, 1),
        "bench_cpu_ms_per_event": round(cpu / events * 1000, 4),
        "consumers_cpu_ms_per_event": round(consumers_cpu / events * 1000, 4),
        "foreign_cores_during": meter.stop(),
    }  # fmt: skip


async def _poll(done: Callable[[], Awaitable[bool]], what: str, limit_s: float = 300) -> float:
    """The clock when ``done`` first answers True, looking every ``POLL_S``."""
    deadline = clock() + limit_s
    while not await done():
        if clock() > deadline:
            raise TimeoutError(f"events not all {what} after {limit_s:.0f} s")
        await asyncio.sleep(POLL_S)
    return clock()


async def _all_committed(db: Database, events: int) -> bool:
    async with db.session() as session:
        audited = await session.scalar(select(func.count()).select_from(AuditRow))
        counted = await session.scalar(select(func.count()).select_from(UsageEventSeenRow))
    return (audited or 0) >= events and (counted or 0) >= events


async def _all_acked(client: aioredis.Redis, stream: str, last: str) -> bool:
    groups = {as_text(g["name"]): g for g in await client.xinfo_groups(stream)}
    return all(
        name in groups
        and int(groups[name]["pending"]) == 0
        and as_text(groups[name]["last-delivered-id"]) == last
        for name in DURABLE_GROUPS
    )


def _acks_of(process: ManagedProcess, out: Path) -> JSONDict:
    """What a consumer process wrote when stopped; it must have stopped cleanly."""
    assert process.process is not None
    if process.process.returncode != 0 or not out.is_file():
        raise process.fail(f"stopped with status {process.process.returncode}, no {out.name}")
    acks: JSONDict = json.loads(out.read_text())["acks"]
    return acks


def _ack_latencies(
    sent: dict[str, float], acks: list[JSONDict]
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Ms from each event's XADD to its first XACK, per group and to the later of the two
    (``both``); how many entries each group acknowledged more than once."""
    first: dict[str, dict[str, float]] = {group: {} for group in DURABLE_GROUPS}
    repeated = dict.fromkeys(DURABLE_GROUPS, 0)
    for process_acks in acks:
        for group, calls in process_acks.items():
            for at, entries, _ in calls:
                for entry in entries:
                    repeated[group] += entry in first[group]
                    first[group][entry] = min(at, first[group].get(entry, at))
    for group, acked in first.items():
        if acked.keys() != sent.keys():
            missing, foreign = len(sent.keys() - acked.keys()), len(acked.keys() - sent.keys())
            raise RuntimeError(
                f"group {group}: {missing} events never acknowledged, {foreign} unknown acked"
            )
    latencies = {
        group: [(first[group][entry] - at) * 1000 for entry, at in sent.items()]
        for group in DURABLE_GROUPS
    }
    if min(min(values) for values in latencies.values()) < 0:
        raise RuntimeError("an XACK before its XADD: the processes' clocks are not one clock")
    latencies["both"] = [max(pair) for pair in zip(*latencies.values(), strict=True)]
    return latencies, repeated


async def _counted_once(db: Database, event_ids: list[str], each: int) -> JSONDict:
    """Check that every event has exactly one audit entry (under its id) and is in the usage
    totals once (its id among the seen ids, the sums of requests and tokens exact)."""
    async with db.session() as session:
        audited = list(await session.scalars(select(AuditRow.id)))
        seen = list(await session.scalars(select(UsageEventSeenRow.event_id)))
        sums = select(
            func.coalesce(func.sum(UsageRow.requests), 0),
            func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
        )
        requests, prompt_tokens = (await session.execute(sums)).one()
    expected = sorted(event_ids)
    problems = [
        f"{what}: {len(got)} ids, {len(set(got))} distinct, {len(set(got) - set(expected))} "
        f"unknown, {len(set(expected) - set(got))} missing"
        for what, got in (("audit entries", audited), ("usage seen ids", seen))
        if sorted(got) != expected
    ]
    if (requests, prompt_tokens) != (len(expected), each * len(expected)):
        problems.append(
            f"usage totals: {requests} requests and {prompt_tokens} prompt tokens for "
            f"{len(expected)} events of {each} tokens"
        )
    if problems:
        raise RuntimeError("events not counted exactly once: " + "; ".join(problems))
    return {"audit_entries": len(audited), "usage_requests": int(requests)}
