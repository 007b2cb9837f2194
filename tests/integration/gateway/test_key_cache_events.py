"""Two gateway replicas' key caches kept right through the bus, on the in-process bus and
on Redis Streams: a team edited on one applies on the other at once, a revocation reaches
the other even when the publisher's queue is full, and a replica that stops leaves no
consumer group behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
import redis.asyncio as aioredis

from atrium.bus import (
    EventPublisher,
    InProcessEventBus,
    ManagedBus,
    RedisStreamsEventBus,
    RequestCompleted,
    is_replica_group,
)
from atrium.bus.redis_streams import DeliveryPolicy
from atrium.core.errors import AuthenticationError
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.db import Database
from atrium.store.keys import ApiKey, ApiKeyRepository
from atrium.store.teams import TeamRepository

pytestmark = pytest.mark.integration

TIMEOUT_S = 10.0
CACHE_TTL = 3600  # only an event, never expiry, can empty the cache within a test
QUEUE = 4


@dataclass
class Replica:
    """One gateway replica's key cache, its bus and its event publisher."""

    bus: ManagedBus
    publisher: EventPublisher
    auth: KeyAuthenticator


@dataclass
class Cluster:
    keys: ApiKeyRepository
    teams: TeamRepository
    first: Replica
    second: Replica


@pytest.fixture(params=["inprocess", "redis"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}")
    await db.migrate()
    keys = ApiKeyRepository(db)
    prefix = f"atrium-test:{uuid4().hex}:"
    shared = InProcessEventBus()  # two replicas in one process share the embedded bus
    clients: list[aioredis.Redis] = []
    replicas = []
    for _ in range(2):
        bus: ManagedBus = shared
        if request.param == "redis":
            clients.append(aioredis.Redis(host="127.0.0.1", port=6379))
            bus = RedisStreamsEventBus(
                clients[-1], stream_prefix=prefix, block_ms=20,
                policy=DeliveryPolicy(claim_idle_ms=1000),
            )  # fmt: skip
        publisher = EventPublisher(bus, max_queue_size=QUEUE)
        auth = KeyAuthenticator(keys, ttl=CACHE_TTL, bus=bus, publish=publisher.publish_urgent)
        await bus.start()
        await auth.start()
        await publisher.start()
        replicas.append(Replica(bus, publisher, auth))
    try:
        yield Cluster(keys, TeamRepository(db), replicas[0], replicas[1])
    finally:
        for replica in replicas:
            await replica.auth.close()
            await replica.publisher.close()
            await replica.bus.close()
        for client in clients:
            leftovers = [key async for key in client.scan_iter(match=prefix + "*")]
            if leftovers:
                await client.delete(*leftovers)
            await client.aclose()
        await db.close()


async def _key_once(auth: KeyAuthenticator, secret: str) -> ApiKey:
    return (await auth.authenticate(f"Bearer {secret}")).key


async def _served(auth: KeyAuthenticator, secret: str) -> bool:
    try:
        await _key_once(auth, secret)
    except AuthenticationError:
        return False
    return True


async def test_a_team_edited_on_one_replica_applies_on_the_other_at_once(
    cluster: Cluster,
) -> None:
    team = await cluster.teams.create(name="ml", rpm=5)
    other = await cluster.teams.create(name="ops", tpm=1000)
    new = await cluster.keys.create(name="svc", team=team)
    for replica in (cluster.first, cluster.second):
        key = await _key_once(replica.auth, new.secret)
        assert key.team is not None
        assert key.team.rpm == 5  # cached for an hour now

    await cluster.teams.update(team.id, {"rpm": 7, "budget_usd": 20.0, "budget_period": "day"})
    cluster.first.auth.forget_team(team.id)

    async with asyncio.timeout(TIMEOUT_S):
        while True:
            key = await _key_once(cluster.second.auth, new.secret)
            assert key.team is not None
            if key.team.rpm == 7:
                break
            await asyncio.sleep(0.01)
    assert (key.team.budget_usd, key.team.budget_period) == (20.0, "day")

    # Membership: the key moved to another team is seen there by the other replica too.
    await cluster.keys.set_team(new.record.id, other)
    cluster.first.auth.forget(new.record.id)
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            key = await _key_once(cluster.second.auth, new.secret)
            if key.team is not None and key.team.id == other.id:
                break
            await asyncio.sleep(0.01)


async def test_a_revocation_reaches_the_other_replica_when_the_queue_is_full(
    cluster: Cluster,
) -> None:
    new = await cluster.keys.create(name="svc")
    await _key_once(cluster.second.auth, new.secret)  # cached for an hour now
    await cluster.keys.revoke(new.record.id)
    publisher = cluster.first.publisher
    filler = RequestCompleted(
        model="m", key_id=None, prompt_tokens=0, completion_tokens=0, latency_ms=1.0,
        status=200, stream=False, endpoint="chat",
    )  # fmt: skip

    # No await between filling the queue and the revocation: the drain cannot make room.
    accepted = [publisher.publish_nowait(filler) for _ in range(QUEUE + 1)]
    cluster.first.auth.forget(new.record.id)

    assert accepted == [True] * QUEUE + [False]
    assert publisher.dropped == 1
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            if not await _served(cluster.second.auth, new.secret):
                break
            await asyncio.sleep(0.01)
    with pytest.raises(AuthenticationError) as refused:
        await _key_once(cluster.second.auth, new.secret)
    assert refused.value.code == "revoked_api_key"
    assert publisher.dropped == 1


async def test_a_replica_that_stops_leaves_no_group_behind(cluster: Cluster) -> None:
    async def replica_groups() -> list[str]:
        streams = await cluster.second.bus.streams()
        return [g.name for s in streams for g in s.groups if is_replica_group(g.name)]

    # Each replica follows key.changed and team.changed in a group of its own.
    assert len(await replica_groups()) == 4

    await cluster.first.auth.close()
    assert len(await replica_groups()) == 2
    await cluster.second.auth.close()
    assert await replica_groups() == []
