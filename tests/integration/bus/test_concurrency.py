"""``subscribe(..., concurrency=N)``: up to N events in a handler at once, each acknowledged
alone, on Redis Streams and in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from atrium.bus import EventBus, InProcessEventBus, RedisStreamsEventBus, RequestCompleted
from atrium.bus.redis_streams import DeliveryPolicy

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0
AT_ONCE = 5


def completed(n: int) -> RequestCompleted:
    return RequestCompleted(
        model="smollm2", key_id=f"key-{n}", prompt_tokens=n, completion_tokens=n,
        latency_ms=1.0, status=200, stream=False, endpoint="chat.completions",
    )  # fmt: skip


@pytest.fixture
async def redis_bus(redis: aioredis.Redis, prefix: str) -> AsyncIterator[RedisStreamsEventBus]:
    policy = DeliveryPolicy(max_deliveries=3, claim_idle_ms=300, backoff_s=0.01, backoff_max_s=0.04)
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20, policy=policy)
    await bus.start()
    yield bus
    await bus.close()


async def handled_at_once(bus: EventBus) -> list[str]:
    """Publish AT_ONCE events to a handler that returns only once all are inside it (so a
    consumer taking one at a time never finishes); the first one fails once. The ids
    handled, in order of return."""
    together = asyncio.Barrier(AT_ONCE)
    failed: set[str] = set()
    handled: list[str] = []
    done = asyncio.Event()
    sent = [completed(n) for n in range(AT_ONCE)]

    async def handle(event: RequestCompleted) -> None:
        if event.id not in failed:
            await together.wait()
        if event.id == sent[0].id and event.id not in failed:
            failed.add(event.id)
            raise RuntimeError("fails once")
        handled.append(event.id)
        if len(handled) == len(sent):
            done.set()

    await bus.subscribe(RequestCompleted, "work", "c1", handle, concurrency=AT_ONCE)
    for event in sent:
        await bus.publish(event)
    await asyncio.wait_for(done.wait(), TIMEOUT_S)
    assert sorted(handled) == sorted(event.id for event in sent)
    assert handled[-1] == sent[0].id  # the failed one came back on its own
    return handled


async def test_redis_consumer_hands_over_a_batch_at_once(
    redis_bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    await handled_at_once(redis_bus)
    stream = redis_bus.stream_name(RequestCompleted.type)
    async with asyncio.timeout(TIMEOUT_S):
        while True:  # every entry acknowledged
            if not (await redis.xpending(stream, "work"))["pending"]:
                break
            await asyncio.sleep(0.01)
    assert await redis_bus.dead_letters() == []


async def test_in_process_consumer_hands_over_events_at_once() -> None:
    bus = InProcessEventBus(retry_backoff_s=0.01)
    try:
        await handled_at_once(bus)
        assert await bus.dead_letters() == []
    finally:
        await bus.close()


async def test_concurrency_below_one_is_refused(redis_bus: RedisStreamsEventBus) -> None:
    async def handle(event: RequestCompleted) -> None:
        del event

    for bus in (redis_bus, InProcessEventBus()):
        with pytest.raises(ValueError, match="concurrency"):
            await bus.subscribe(RequestCompleted, "work", "c1", handle, concurrency=0)
