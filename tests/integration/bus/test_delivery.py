"""Redis Streams delivery guarantees: retries, dead letters, reclaim, replay, reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from atrium.bus import RedisStreamsEventBus, RequestCompleted
from atrium.bus.dedup import EventInProgressError, IdempotentHandler
from atrium.bus.redis_streams import DeliveryPolicy, replay_offset
from atrium.core.errors import InvalidRequestError, NotFoundError
from tests.integration._delivery import until

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0
TOPIC = RequestCompleted.type
FAST = DeliveryPolicy(max_deliveries=3, claim_idle_ms=300, backoff_s=0.01, backoff_max_s=0.04)


def completed(n: int = 0) -> RequestCompleted:
    return RequestCompleted(
        model="smollm2",
        key_id=f"key-{n}",
        prompt_tokens=n,
        completion_tokens=n,
        latency_ms=1.0,
        status=200,
        stream=False,
        endpoint="chat.completions",
    )


class Collector:
    """Records the ids it handles; ``wait_for`` a number of them."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._changed = asyncio.Condition()

    async def __call__(self, event: RequestCompleted) -> None:
        async with self._changed:
            self.ids.append(event.id)
            self._changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(TIMEOUT_S), self._changed:
            await self._changed.wait_for(lambda: len(self.ids) >= count)


@pytest.fixture
async def bus(redis: aioredis.Redis, prefix: str) -> AsyncIterator[RedisStreamsEventBus]:
    bus = RedisStreamsEventBus(
        redis, stream_prefix=prefix, block_ms=20, retry_delay_s=0.01, policy=FAST
    )
    await bus.start()
    yield bus
    await bus.close()


async def pending(redis: aioredis.Redis, bus: RedisStreamsEventBus, group: str) -> int:
    summary = await redis.xpending(bus.stream_name(TOPIC), group)
    return int(summary["pending"])


async def test_failing_handler_is_retried_then_dead_lettered_with_the_reason(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    attempts: list[str] = []
    good = Collector()
    poison = completed(1)

    async def handler(event: RequestCompleted) -> None:
        attempts.append(event.id)
        if event.id == poison.id:
            raise RuntimeError(f"cannot handle attempt {len(attempts)}")
        await good(event)

    await bus.subscribe(RequestCompleted, "audit", "c1", handler)
    poison_entry = await bus.publish(poison)
    after = completed(2)
    await bus.publish(after)

    async def dead_lettered() -> bool:
        return bool(await bus.dead_letters())

    await until(dead_lettered, TIMEOUT_S)
    await good.wait_for(1)
    assert attempts.count(poison.id) == FAST.max_deliveries
    [letter] = await bus.dead_letters()
    assert (letter.topic, letter.group, letter.entry_id) == (TOPIC, "audit", poison_entry)
    assert letter.attempts == 3
    assert letter.reason == f"handler failed: RuntimeError: cannot handle attempt {len(attempts)}"
    assert letter.consumer == "c1"
    assert RequestCompleted.model_validate_json(letter.data) == poison
    assert await pending(redis, bus, "audit") == 0
    assert good.ids == [after.id]


async def test_retried_dead_letter_goes_to_its_group_alone(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    broken = True
    audit, usage = Collector(), Collector()

    async def flaky(event: RequestCompleted) -> None:
        if broken:
            raise RuntimeError("database down")
        await audit(event)

    await bus.subscribe(RequestCompleted, "audit", "c1", flaky)
    await bus.subscribe(RequestCompleted, "usage", "c1", usage)
    sent = completed()
    await bus.publish(sent)

    async def dead_lettered() -> bool:
        return bool(await bus.dead_letters())

    await until(dead_lettered, TIMEOUT_S)
    [letter] = await bus.dead_letters()
    broken = False

    await bus.retry_dead_letter(letter.id)

    await audit.wait_for(1)
    await until(lambda: _zero(pending(redis, bus, "usage")), TIMEOUT_S)
    await asyncio.sleep(0.1)  # time enough for the usage group to see the retried entry
    assert audit.ids == [sent.id]
    assert usage.ids == [sent.id]
    assert await bus.dead_letters() == []
    with pytest.raises(NotFoundError):
        await bus.dead_letter(letter.id)


async def test_delete_dead_letter_and_bad_ids(bus: RedisStreamsEventBus) -> None:
    async def broken(event: RequestCompleted) -> None:
        raise ValueError("never")

    await bus.subscribe(RequestCompleted, "audit", "c1", broken)
    await bus.publish(completed())

    async def dead_lettered() -> bool:
        return bool(await bus.dead_letters())

    await until(dead_lettered, TIMEOUT_S)
    [letter] = await bus.dead_letters()
    await bus.delete_dead_letter(letter.id)
    assert await bus.dead_letters() == []
    with pytest.raises(NotFoundError):
        await bus.delete_dead_letter(letter.id)
    with pytest.raises(InvalidRequestError):
        await bus.delete_dead_letter("not-an-id")


async def test_entries_of_a_vanished_consumer_are_taken_over_by_another(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    entered = asyncio.Event()

    async def stuck(event: RequestCompleted) -> None:
        entered.set()
        await asyncio.Event().wait()

    first = await bus.subscribe(RequestCompleted, "work", "gone", stuck)
    sent = [completed(n) for n in range(3)]
    for event in sent:
        await bus.publish(event)
    await asyncio.wait_for(entered.wait(), TIMEOUT_S)
    await first.stop()  # "gone" never comes back: its entries stay pending under its name
    assert await pending(redis, bus, "work") == 3

    survivor = Collector()
    await bus.subscribe(RequestCompleted, "work", "survivor", survivor)

    await survivor.wait_for(3)
    assert sorted(survivor.ids) == sorted(event.id for event in sent)
    await until(lambda: _zero(pending(redis, bus, "work")), TIMEOUT_S)


async def test_a_slow_live_consumer_keeps_its_entry(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    handled: list[str] = []
    release = asyncio.Event()

    async def slow(event: RequestCompleted) -> None:
        handled.append(f"slow:{event.id}")
        await release.wait()

    async def other(event: RequestCompleted) -> None:
        handled.append(f"other:{event.id}")

    await bus.subscribe(RequestCompleted, "work", "slow", slow)
    sent = completed()
    await bus.publish(sent)
    await until(lambda: _true(bool(handled)), TIMEOUT_S)
    await bus.subscribe(RequestCompleted, "work", "other", other)

    await asyncio.sleep(3 * FAST.claim_idle_ms / 1000)  # three claim timeouts go by
    release.set()

    await until(lambda: _zero(pending(redis, bus, "work")), TIMEOUT_S)
    assert handled == [f"slow:{sent.id}"]


async def test_replay_from_an_offset_for_a_group_and_for_a_new_group(
    bus: RedisStreamsEventBus,
) -> None:
    live = Collector()
    await bus.subscribe(RequestCompleted, "audit", "c1", live)
    sent = [completed(n) for n in range(4)]
    ids = [await bus.publish(event) for event in sent]
    await live.wait_for(4)

    await bus.replay(TOPIC, "audit", ids[1])
    await bus.replay(TOPIC, "late", "0")
    late = Collector()
    await bus.subscribe(RequestCompleted, "late", "c1", late)

    await live.wait_for(6)
    await late.wait_for(4)
    assert live.ids == [e.id for e in sent] + [e.id for e in sent[2:]]
    assert late.ids == [e.id for e in sent]
    with pytest.raises(InvalidRequestError):
        await bus.replay(TOPIC, "audit", "yesterday")
    with pytest.raises(NotFoundError):
        await bus.replay("no.such.type", "audit", "0")


async def test_replay_since_a_time(bus: RedisStreamsEventBus) -> None:
    await bus.publish(completed(1))
    await asyncio.sleep(0.01)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.01)
    later = completed(2)
    await bus.publish(later)

    await bus.replay(TOPIC, "since", replay_offset(None, cut))
    got = Collector()
    await bus.subscribe(RequestCompleted, "since", "c1", got)

    await got.wait_for(1)
    await asyncio.sleep(0.05)
    assert got.ids == [later.id]
    with pytest.raises(InvalidRequestError):
        replay_offset("0", cut)


async def test_streams_show_length_groups_pending_and_lag(
    bus: RedisStreamsEventBus,
) -> None:
    gate = asyncio.Event()

    async def held(event: RequestCompleted) -> None:
        await gate.wait()

    await bus.subscribe(RequestCompleted, "audit", "c1", held)
    await bus.replay(TOPIC, "idle", "0")  # a group with nobody reading
    for n in range(3):
        await bus.publish(completed(n))

    async def one_pending() -> bool:
        [stream] = await bus.streams()
        return stream.groups[0].pending >= 1

    await until(one_pending, TIMEOUT_S)
    [stream] = await bus.streams()
    gate.set()

    assert (stream.topic, stream.length) == (TOPIC, 3)
    audit, idle = stream.groups
    assert (audit.name, audit.consumers, audit.pending) == ("audit", 1, 3)
    assert (idle.name, idle.consumers, idle.pending, idle.lag) == ("idle", 0, 0, 3)


async def test_idempotent_handler_runs_an_event_once(redis: aioredis.Redis, prefix: str) -> None:
    calls: list[str] = []

    async def work(event: RequestCompleted) -> None:
        calls.append(event.id)

    handler = IdempotentHandler(redis, work, scope="t", prefix=prefix, lease_ms=10_000)
    event = completed()

    await handler(event)
    await handler(event)  # a redelivery

    assert calls == [event.id]


async def test_idempotent_handler_refuses_an_event_in_progress_then_frees_a_failed_one(
    redis: aioredis.Redis, prefix: str
) -> None:
    release = asyncio.Event()

    async def slow(event: RequestCompleted) -> None:
        await release.wait()
        raise RuntimeError("failed")

    handler = IdempotentHandler(redis, slow, scope="t", prefix=prefix, lease_ms=10_000)
    event = completed()
    first = asyncio.create_task(handler(event))
    await until(lambda: _true_async(redis.exists(f"{prefix}t:{event.id}")), TIMEOUT_S)

    with pytest.raises(EventInProgressError):
        await handler(event)
    release.set()
    with pytest.raises(RuntimeError):
        await first
    assert not await redis.exists(f"{prefix}t:{event.id}")


async def test_consumers_ride_out_killed_connections_and_deliver_every_event(
    prefix: str,
) -> None:
    name = prefix.replace(":", "-").strip("-")
    client = aioredis.Redis(host="127.0.0.1", port=6379, client_name=name)
    admin = aioredis.Redis(host="127.0.0.1", port=6379)
    bus = RedisStreamsEventBus(
        client, stream_prefix=prefix, block_ms=20, retry_delay_s=0.01, policy=FAST
    )
    got = Collector()
    try:
        await bus.subscribe(RequestCompleted, "audit", "c1", got)
        sent = [completed(n) for n in range(300)]
        killed = 0
        for n, event in enumerate(sent):
            if n % 60 == 30:
                killed += await _kill_clients(admin, name)
            await bus.publish(event)
        assert killed >= 5  # the consumer's and the publisher's connections, each time
        await got.wait_for(len(sent))
        assert set(got.ids) == {event.id for event in sent}
    finally:
        await bus.close()
        keys = [key async for key in admin.scan_iter(match=prefix + "*")]
        if keys:
            await admin.delete(*keys)
        await client.aclose()
        await admin.aclose()


async def _kill_clients(admin: aioredis.Redis, name: str) -> int:
    # Only this test's own connections: other tests share this Redis.
    ids = [info["id"] for info in await admin.client_list() if info.get("name") == name]
    for client_id in ids:
        await admin.client_kill_filter(_id=client_id)
    return len(ids)


async def _zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def _true(value: bool) -> bool:
    return value


async def _true_async(value: Awaitable[int]) -> bool:
    return bool(await value)
