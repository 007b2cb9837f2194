"""``once_per_event``: on Redis Streams an event id is handled once per scope, however
often it is delivered; in process the handler is left as it is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from atrium.bus import InProcessEventBus, RedisStreamsEventBus, RequestCompleted
from atrium.bus.dedup import once_per_event

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0


def completed(n: int) -> RequestCompleted:
    return RequestCompleted(
        model="smollm2", key_id=f"key-{n}", prompt_tokens=n, completion_tokens=n,
        latency_ms=1.0, status=200, stream=False, endpoint="chat.completions",
    )  # fmt: skip


async def test_an_event_delivered_twice_is_handled_once_per_scope(
    redis: aioredis.Redis, prefix: str
) -> None:
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20)
    handled: list[tuple[str, str]] = []
    both = asyncio.Event()

    def counter(scope: str) -> Callable[[RequestCompleted], Awaitable[None]]:
        async def handle(event: RequestCompleted) -> None:
            handled.append((scope, event.id))
            if len(handled) == 4:
                both.set()

        return handle

    try:
        for group in ("a", "b"):
            handler = once_per_event(bus, counter(group), scope=group)
            await bus.subscribe(RequestCompleted, group, "c", handler)
        first, second = completed(1), completed(2)
        for event in (first, first, second, first):  # a publish retried after a lost reply
            await bus.publish(event)
        await asyncio.wait_for(both.wait(), TIMEOUT_S)
        await asyncio.sleep(0.2)  # a duplicate would have come by now
    finally:
        await bus.close()

    assert sorted(handled) == sorted(
        [("a", first.id), ("a", second.id), ("b", first.id), ("b", second.id)]
    )
    assert await redis.exists(f"{prefix}seen:a:{first.id}")


async def test_in_process_the_handler_is_left_as_it_is() -> None:
    async def handle(event: RequestCompleted) -> None:
        del event

    assert once_per_event(InProcessEventBus(), handle, scope="a") is handle
