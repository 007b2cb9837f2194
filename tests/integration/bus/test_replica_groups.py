"""Groups of one replica alone (``replica_group``) on a real Redis: destroyed when the
replica stops, swept by the other replicas' housekeeping when it died; shared groups and
the dead letters are never touched. Also: urgent events do not queue behind a backlog."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from atrium.bus import (
    EventPublisher,
    KeyChanged,
    RedisStreamsEventBus,
    RequestCompleted,
    replica_group,
)
from atrium.bus._redis_consumer import as_text
from atrium.bus.redis_streams import DeliveryPolicy
from tests.integration._delivery import first_line, python_process, sigkill, until

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
TIMEOUT_S = 5.0
TOPIC = KeyChanged.type
CLAIM_IDLE_MS = 300  # consumers send a heartbeat every 100 ms


async def ignore(_: KeyChanged) -> None:
    return None


def new_bus(redis: aioredis.Redis, prefix: str, **options: float) -> RedisStreamsEventBus:
    policy = DeliveryPolicy(claim_idle_ms=CLAIM_IDLE_MS, backoff_s=0.01, backoff_max_s=0.05)
    return RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20, policy=policy, **options)


async def groups_of(bus: RedisStreamsEventBus) -> set[str]:
    return {g.name for s in await bus.streams() if s.topic == TOPIC for g in s.groups}


async def leave_group_behind(redis: aioredis.Redis, bus: RedisStreamsEventBus, group: str,
                             last_heartbeat: float | None) -> None:  # fmt: skip
    """What a replica killed without shutting down leaves: its group, and its presence set
    with the last heartbeat (none when that set already expired)."""
    stream = bus.stream_name(TOPIC)
    await redis.xgroup_create(stream, group, id="$", mkstream=True)
    if last_heartbeat is not None:
        await redis.zadd(bus.presence_key(stream, group), {"c": last_heartbeat})


async def test_stopping_a_replica_subscription_destroys_its_group(
    redis: aioredis.Redis, prefix: str
) -> None:
    bus = new_bus(redis, prefix)
    mine = replica_group("keys")
    subscription = await bus.subscribe(KeyChanged, mine, "c", ignore)
    await bus.subscribe(KeyChanged, "audit", "c", ignore)
    presence = bus.presence_key(bus.stream_name(TOPIC), mine)
    assert await groups_of(bus) == {mine, "audit"}
    assert await redis.exists(presence)

    await subscription.stop()

    assert await groups_of(bus) == {"audit"}
    assert not await redis.exists(presence)
    other = replica_group("routes")
    await bus.subscribe(KeyChanged, other, "c", ignore)
    await bus.close()
    # Closing the bus drops the replica's remaining group; the shared one stays, with its
    # place in the stream, for the consumers to come.
    assert await groups_of(bus) == {"audit"}


async def test_a_sweep_destroys_only_abandoned_replica_groups(
    redis: aioredis.Redis, prefix: str
) -> None:
    bus = new_bus(redis, prefix)
    live = replica_group("keys")
    await bus.subscribe(KeyChanged, live, "c", ignore)
    dead, expired = replica_group("keys"), replica_group("routes")
    await leave_group_behind(redis, bus, dead, last_heartbeat=time.time() - 120)
    await leave_group_behind(redis, bus, expired, last_heartbeat=None)
    await leave_group_behind(redis, bus, "audit", last_heartbeat=time.time() - 120)
    await redis.xadd(bus.dead_letter_stream, {"topic": TOPIC, "group": dead})

    swept = await bus.sweep_replica_groups(60)

    assert sorted(swept) == sorted([(TOPIC, dead), (TOPIC, expired)])
    assert await groups_of(bus) == {live, "audit"}
    stream = bus.stream_name(TOPIC)
    assert not await redis.exists(bus.presence_key(stream, dead))
    assert await redis.exists(bus.presence_key(stream, "audit"))
    assert await redis.xlen(bus.dead_letter_stream) == 1
    assert await bus.sweep_replica_groups(60) == []
    await bus.close()


async def test_the_group_of_a_killed_replica_is_swept_by_a_live_one(
    shared_redis: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = shared_redis
    with python_process(HERE / "_replica_process.py", prefix, str(CLAIM_IDLE_MS)) as doomed:
        gone = await first_line(doomed, TIMEOUT_S)
        await sigkill(doomed, TIMEOUT_S)
    idle_s = 3 * CLAIM_IDLE_MS / 1000
    bus = new_bus(redis, prefix, replica_group_idle_s=idle_s, housekeeping_interval_s=0.05)
    await bus.start()
    live = replica_group("keys")
    await bus.subscribe(KeyChanged, live, "c", ignore)
    assert await groups_of(bus) == {gone, live, "audit"}

    async def swept() -> bool:
        return gone not in await groups_of(bus)

    await until(swept, TIMEOUT_S)

    # The live replica's group outlasts many sweeps and the idle bound itself.
    await asyncio.sleep(1.5 * idle_s)
    assert await groups_of(bus) == {live, "audit"}
    await bus.close()


async def test_an_urgent_event_does_not_wait_for_a_backlog(
    shared_redis: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = shared_redis
    bus = new_bus(redis, prefix)
    publisher = EventPublisher(bus)
    backlog = [
        RequestCompleted(model="m", key_id=None, prompt_tokens=n, completion_tokens=0,
                         latency_ms=1.0, status=200, stream=False, endpoint="chat.completions")
        for n in range(1000)
    ]  # fmt: skip
    for event in backlog:
        assert publisher.publish_nowait(event)
    revoked = KeyChanged(key_id="k1")
    assert publisher.publish_urgent(revoked)

    await publisher.start()
    await publisher.close()

    [(urgent_id, _)] = await redis.xrange(bus.stream_name(TOPIC))
    [(last_id, _)] = await redis.xrevrange(bus.stream_name(RequestCompleted.type), count=1)
    assert _stream_id(urgent_id) < _stream_id(last_id)  # published while the backlog drained
    assert publisher.published == len(backlog) + 1


def _stream_id(value: bytes) -> tuple[int, int]:
    ms, _, seq = as_text(value).partition("-")
    return int(ms), int(seq)
