"""RedisStreamsEventBus against a real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from atrium.bus import EventBus, RedisStreamsEventBus, RequestCompleted
from atrium.bus.admin import BusAdmin
from atrium.bus.base import Event
from atrium.bus.redis_streams import DeliveryPolicy

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0
TOPIC = RequestCompleted.type


def completed(n: int = 0) -> RequestCompleted:
    return RequestCompleted(
        model="smollm2",
        key_id=f"key-{n}",
        prompt_tokens=n,
        completion_tokens=2 * n,
        latency_ms=3.25,
        status=200,
        stream=False,
        endpoint="chat.completions",
    )


class Collector:
    """A handler that records what it gets; ``wait`` until it has some number of events."""

    def __init__(self, expected: int = 1) -> None:
        self.events: list[RequestCompleted] = []
        self.expected = expected
        self._changed = asyncio.Condition()

    async def __call__(self, event: RequestCompleted) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def wait(self, count: int | None = None) -> None:
        target = self.expected if count is None else count
        async with asyncio.timeout(TIMEOUT_S), self._changed:
            await self._changed.wait_for(lambda: len(self.events) >= target)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll Redis state through ``check`` until it holds; fail after TIMEOUT_S."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def bus(redis: aioredis.Redis, prefix: str) -> AsyncIterator[RedisStreamsEventBus]:
    policy = DeliveryPolicy(claim_idle_ms=1000, backoff_s=0.01, backoff_max_s=0.05)
    bus = RedisStreamsEventBus(
        redis, stream_prefix=prefix, block_ms=20, retry_delay_s=0.01, policy=policy
    )
    await bus.start()
    yield bus
    await bus.close()


async def pending(redis: aioredis.Redis, bus: RedisStreamsEventBus, group: str) -> int:
    summary = await redis.xpending(bus.stream_name(TOPIC), group)
    return int(summary["pending"])


def test_implements_protocol(bus: RedisStreamsEventBus) -> None:
    assert isinstance(bus, EventBus)
    assert isinstance(bus, BusAdmin)


async def test_round_trip_keeps_every_field(bus: RedisStreamsEventBus) -> None:
    got = Collector()
    await bus.subscribe(RequestCompleted, "audit", "c1", got)
    sent = completed(7)

    message_id = await bus.publish(sent)

    await got.wait()
    assert "-" in message_id  # a stream entry id, "<ms>-<seq>"
    assert got.events == [sent]
    assert got.events[0].occurred_at == sent.occurred_at


async def test_entry_wire_format_has_no_content(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    await bus.publish(completed(3))

    entries = await redis.xrange(bus.stream_name(TOPIC))
    assert entries is not None
    [(_, raw)] = entries
    assert raw is not None
    fields = {_text(key): _text(value) for key, value in raw.items()}

    assert set(fields) == {"type", "v", "data"}
    assert fields["type"] == "request.completed"
    assert fields["v"] == "1"
    data = json.loads(fields["data"])
    assert data["prompt_tokens"] == 3
    assert not any(name in data for name in ("prompt", "completion", "messages", "input"))


async def test_every_group_gets_every_event(bus: RedisStreamsEventBus) -> None:
    audit, usage = Collector(3), Collector(3)
    await bus.subscribe(RequestCompleted, "audit", "c1", audit)
    await bus.subscribe(RequestCompleted, "usage", "c1", usage)
    sent = [completed(n) for n in range(3)]

    for event in sent:
        await bus.publish(event)

    await audit.wait()
    await usage.wait()
    assert audit.events == sent
    assert usage.events == sent


async def test_consumers_in_a_group_split_events_without_loss_or_duplicates(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    total = 200
    seen: dict[str, list[str]] = {"a": [], "b": []}
    all_in = asyncio.Event()
    b_started = asyncio.Event()

    def handler_for(name: str) -> Callable[[RequestCompleted], Awaitable[None]]:
        async def handle(event: RequestCompleted) -> None:
            if name == "a" and not seen["a"]:
                # Hold a on its first event until b has one: proves the split.
                await asyncio.wait_for(b_started.wait(), TIMEOUT_S)
            seen[name].append(event.id)
            if name == "b":
                b_started.set()
            if len(seen["a"]) + len(seen["b"]) == total:
                all_in.set()

        return handle

    await bus.subscribe(RequestCompleted, "usage", "a", handler_for("a"))
    await bus.subscribe(RequestCompleted, "usage", "b", handler_for("b"))
    sent = [completed(n) for n in range(total)]
    for event in sent:
        await bus.publish(event)

    await asyncio.wait_for(all_in.wait(), TIMEOUT_S)
    received = seen["a"] + seen["b"]
    assert len(received) == len(set(received)) == total
    assert set(received) == {event.id for event in sent}
    assert seen["a"]
    assert seen["b"]
    await eventually(lambda: _is_zero(pending(redis, bus, "usage")))


async def test_failed_handler_leaves_entry_pending_until_redelivered(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    attempts: list[str] = []
    done = asyncio.Event()

    async def flaky(event: RequestCompleted) -> None:
        attempts.append(event.id)
        if len(attempts) == 1:
            raise RuntimeError("transient")
        done.set()

    await bus.subscribe(RequestCompleted, "audit", "c1", flaky)
    sent = completed()
    await bus.publish(sent)

    await asyncio.wait_for(done.wait(), TIMEOUT_S)
    assert attempts == [sent.id, sent.id]
    await eventually(lambda: _is_zero(pending(redis, bus, "audit")))


async def test_entry_of_a_stopped_consumer_is_redelivered_when_it_returns(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    entered = asyncio.Event()

    async def stuck(event: RequestCompleted) -> None:
        entered.set()
        await asyncio.Event().wait()  # never acks

    first = await bus.subscribe(RequestCompleted, "audit", "c1", stuck)
    sent = completed()
    await bus.publish(sent)
    await asyncio.wait_for(entered.wait(), TIMEOUT_S)
    await first.stop()
    assert await pending(redis, bus, "audit") == 1

    got = Collector()
    await bus.subscribe(RequestCompleted, "audit", "c1", got)

    await got.wait()
    assert got.events == [sent]
    await eventually(lambda: _is_zero(pending(redis, bus, "audit")))


async def test_stream_length_stays_bounded(redis: aioredis.Redis, prefix: str) -> None:
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, max_stream_length=100)
    for n in range(1000):
        await bus.publish(completed(n))

    length = await redis.xlen(bus.stream_name(TOPIC))

    # Approximate trimming removes whole radix-tree nodes (100 entries each by
    # default), so the stream keeps at least 100 and at most about one node more.
    assert 100 <= length <= 300


async def test_poison_entries_are_dead_lettered_with_the_reason(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    got = Collector()
    await bus.subscribe(RequestCompleted, "audit", "c1", got)
    stream = bus.stream_name(TOPIC)
    good = completed()
    await redis.xadd(stream, {"type": "no.such.event", "v": "1", "data": "{}"})
    await redis.xadd(stream, {"type": TOPIC, "v": "2", "data": good.model_dump_json()})
    await redis.xadd(stream, {"type": TOPIC, "v": "one", "data": good.model_dump_json()})
    await redis.xadd(stream, {"type": TOPIC, "v": "1", "data": "{not json"})
    await redis.xadd(stream, {"type": TOPIC, "v": "1", "data": '{"model": "m"}'})
    await redis.xadd(stream, {"type": TOPIC, "v": "1"})
    await bus.publish(good)

    await got.wait()
    assert got.events == [good]
    await eventually(lambda: _is_zero(pending(redis, bus, "audit")))
    letters = list(reversed(await bus.dead_letters()))
    reasons = [letter.reason for letter in letters]
    assert reasons[0] == "unknown event type 'no.such.event'"
    assert reasons[1] == "unknown request.completed version 2 (this code knows 1)"
    assert reasons[2] == "unknown request.completed version 'one'"
    assert reasons[3].startswith("invalid request.completed data:")
    assert reasons[4].startswith("invalid request.completed data:")
    assert reasons[5] == "entry has no 'data' field"
    assert len(letters) == 6
    assert {(letter.group, letter.attempts) for letter in letters} == {("audit", 1)}
    assert letters[3].data == "{not json"


async def test_group_gets_only_events_published_after_it_exists(
    bus: RedisStreamsEventBus,
) -> None:
    before, after = completed(1), completed(2)
    await bus.publish(before)
    got = Collector()
    await bus.subscribe(RequestCompleted, "audit", "c1", got)

    await bus.publish(after)

    await got.wait()
    assert got.events == [after]


async def test_consumer_recovers_when_the_stream_and_group_vanish(
    bus: RedisStreamsEventBus, redis: aioredis.Redis
) -> None:
    got = Collector(2)
    await bus.subscribe(RequestCompleted, "audit", "c1", got)
    first = completed(1)
    await bus.publish(first)
    await got.wait(1)

    # What a Redis restart without persistence looks like to a consumer.
    await redis.delete(bus.stream_name(TOPIC))

    async def group_is_back() -> bool:
        try:
            groups = await redis.xinfo_groups(bus.stream_name(TOPIC))
        except aioredis.ResponseError:
            return False
        return len(groups) == 1

    await eventually(group_is_back)
    second = completed(2)
    await bus.publish(second)
    await got.wait()
    assert got.events == [first, second]


async def test_subscribing_to_an_unregistered_event_type_fails(
    bus: RedisStreamsEventBus,
) -> None:
    class Unregistered(Event):
        type = "test.unregistered"

    async def handler(event: Unregistered) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="not in this bus's registry"):
        await bus.subscribe(Unregistered, "audit", "c1", handler)


async def test_close_stops_consumers_and_leaves_the_client_open(
    redis: aioredis.Redis, prefix: str
) -> None:
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=100)
    await bus.subscribe(RequestCompleted, "audit", "closing", Collector())

    await bus.close()

    assert not [t for t in asyncio.all_tasks() if t.get_name() == "atrium.bus.audit.closing"]
    assert await redis.ping()


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
