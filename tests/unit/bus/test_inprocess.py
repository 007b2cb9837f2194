"""InProcessEventBus: fan-out across groups, competing consumers, retries, and event shape."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from atrium.bus import Event, EventBus, InProcessEventBus, RequestCompleted, replica_group
from atrium.bus.admin import BusAdmin, DeadLetter
from atrium.core.errors import InvalidRequestError, NotFoundError

TIMEOUT_S = 5.0
TOPIC = RequestCompleted.type


def completed(n: int = 0) -> RequestCompleted:
    return RequestCompleted(
        model="smollm2",
        key_id=f"key-{n}",
        prompt_tokens=n,
        completion_tokens=2 * n,
        latency_ms=12.5,
        status=200,
        stream=False,
        endpoint="chat.completions",
    )


class Collector:
    """A handler that records what it gets and signals once it has ``expected`` events."""

    def __init__(self, expected: int = 1) -> None:
        self.events: list[RequestCompleted] = []
        self.expected = expected
        self.done = asyncio.Event()

    async def __call__(self, event: RequestCompleted) -> None:
        self.events.append(event)
        if len(self.events) >= self.expected:
            self.done.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.done.wait(), TIMEOUT_S)


@pytest.fixture
async def bus() -> AsyncIterator[InProcessEventBus]:
    bus = InProcessEventBus(retry_backoff_s=0.0)
    await bus.start()
    yield bus
    await bus.close()


def test_implements_protocol(bus: InProcessEventBus) -> None:
    assert isinstance(bus, EventBus)
    assert isinstance(bus, BusAdmin)


async def test_round_trip_keeps_every_field(bus: InProcessEventBus) -> None:
    got = Collector()
    await bus.subscribe(RequestCompleted, "audit", "c1", got)
    sent = completed(7)

    message_id = await bus.publish(sent)

    await got.wait()
    assert message_id
    assert got.events == [sent]
    assert got.events[0].model_dump() == sent.model_dump()


async def test_every_group_gets_every_event(bus: InProcessEventBus) -> None:
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
    bus: InProcessEventBus,
) -> None:
    total = 200
    seen: dict[str, list[str]] = {"a": [], "b": []}
    all_in = asyncio.Event()
    b_started = asyncio.Event()

    def handler_for(name: str) -> Callable[[RequestCompleted], Awaitable[None]]:
        async def handle(event: RequestCompleted) -> None:
            if name == "a" and not seen["a"]:
                # Hold consumer a on its first event until b has one: proves the split.
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


async def test_failed_handler_is_retried_then_succeeds(bus: InProcessEventBus) -> None:
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


async def test_always_failing_event_is_dead_lettered_after_bounded_attempts(
    bus: InProcessEventBus,
) -> None:
    attempts: list[str] = []
    later = asyncio.Event()
    poison, good = completed(1), completed(2)

    async def handler(event: RequestCompleted) -> None:
        attempts.append(event.id)
        if event.id == poison.id:
            raise RuntimeError("always")
        later.set()

    await bus.subscribe(RequestCompleted, "audit", "c1", handler)
    poison_id = await bus.publish(poison)
    await bus.publish(good)

    await asyncio.wait_for(later.wait(), TIMEOUT_S)
    assert attempts == [poison.id] * 3 + [good.id]
    [letter] = await bus.dead_letters()
    assert (letter.topic, letter.group, letter.entry_id) == (TOPIC, "audit", poison_id)
    assert letter.reason == "handler failed: RuntimeError: always"
    assert letter.attempts == 3
    assert letter.consumer == "c1"
    assert RequestCompleted.model_validate_json(letter.data) == poison
    assert await bus.dead_letter(letter.id) == letter


async def test_retried_dead_letter_reaches_only_its_group(bus: InProcessEventBus) -> None:
    failing = True
    audit, usage = Collector(), Collector()

    async def flaky(event: RequestCompleted) -> None:
        if failing:
            raise RuntimeError("down")
        await audit(event)

    await bus.subscribe(RequestCompleted, "audit", "c1", flaky)
    await bus.subscribe(RequestCompleted, "usage", "c1", usage)
    sent = completed()
    await bus.publish(sent)
    await usage.wait()
    letters = await _eventually_letters(bus)
    failing = False

    new_id = await bus.retry_dead_letter(letters[0].id)

    await audit.wait()
    assert audit.events == [sent]
    assert usage.events == [sent]  # the usage group is not handed it a second time
    assert new_id > letters[0].entry_id
    assert await bus.dead_letters() == []
    with pytest.raises(NotFoundError):
        await bus.retry_dead_letter(letters[0].id)


async def test_deleted_dead_letter_is_gone(bus: InProcessEventBus) -> None:
    async def broken(event: RequestCompleted) -> None:
        raise ValueError("bad")

    await bus.subscribe(RequestCompleted, "audit", "c1", broken)
    await bus.publish(completed())
    [letter] = await _eventually_letters(bus)

    await bus.delete_dead_letter(letter.id)

    assert await bus.dead_letters() == []
    with pytest.raises(NotFoundError):
        await bus.delete_dead_letter(letter.id)


async def test_replay_from_an_offset_to_an_existing_and_a_new_group(
    bus: InProcessEventBus,
) -> None:
    live = Collector(3)
    await bus.subscribe(RequestCompleted, "audit", "c1", live)
    sent = [completed(n) for n in range(3)]
    ids = [await bus.publish(event) for event in sent]
    await live.wait()

    await bus.replay(TOPIC, "audit", ids[0])
    await bus.replay(TOPIC, "late", "0")
    late = Collector(3)
    await bus.subscribe(RequestCompleted, "late", "c1", late)

    await late.wait()
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while len(live.events) < 5:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("replayed events not delivered in time")
        await asyncio.sleep(0.005)
    assert live.events == [*sent, *sent[1:]]
    assert late.events == sent
    with pytest.raises(InvalidRequestError):
        await bus.replay(TOPIC, "audit", "yesterday")
    with pytest.raises(NotFoundError):
        await bus.replay("no.such.type", "audit", "0")


async def test_streams_report_length_groups_and_lag(bus: InProcessEventBus) -> None:
    gate = asyncio.Event()

    async def slow(event: RequestCompleted) -> None:
        await gate.wait()

    await bus.subscribe(RequestCompleted, "audit", "c1", slow)
    for n in range(3):
        await bus.publish(completed(n))
    await asyncio.sleep(0)

    [stream] = await bus.streams()

    assert (stream.topic, stream.length) == (TOPIC, 3)
    [group] = stream.groups
    assert (group.name, group.consumers, group.pending, group.lag) == ("audit", 1, 1, 2)
    gate.set()


async def _eventually_letters(bus: InProcessEventBus) -> list[DeadLetter]:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while not (letters := await bus.dead_letters()):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("no dead letter in time")
        await asyncio.sleep(0.005)
    return letters


async def test_stopped_consumer_gives_its_event_back_to_the_group(bus: InProcessEventBus) -> None:
    entered = asyncio.Event()

    async def stuck(event: RequestCompleted) -> None:
        entered.set()
        await asyncio.Event().wait()  # never acks

    first = await bus.subscribe(RequestCompleted, "audit", "c1", stuck)
    sent = completed()
    await bus.publish(sent)
    await asyncio.wait_for(entered.wait(), TIMEOUT_S)

    await first.stop()
    got = Collector()
    await bus.subscribe(RequestCompleted, "audit", "c2", got)

    await got.wait()
    assert got.events == [sent]


async def test_group_gets_only_events_published_after_it_exists(bus: InProcessEventBus) -> None:
    before, after = completed(1), completed(2)
    await bus.publish(before)
    got = Collector()
    await bus.subscribe(RequestCompleted, "audit", "c1", got)

    await bus.publish(after)

    await got.wait()
    assert got.events == [after]


async def test_close_stops_subscriptions(bus: InProcessEventBus) -> None:
    subscription = await bus.subscribe(RequestCompleted, "audit", "closing", Collector())

    await bus.close()

    assert not [t for t in asyncio.all_tasks() if t.get_name() == "atrium.bus.audit.closing"]
    await subscription.stop()  # idempotent after close


async def test_a_replica_group_goes_with_its_last_consumer(bus: InProcessEventBus) -> None:
    mine = replica_group("keys")
    first = await bus.subscribe(RequestCompleted, mine, "c1", Collector())
    second = await bus.subscribe(RequestCompleted, mine, "c2", Collector())
    shared = await bus.subscribe(RequestCompleted, "audit", "c1", Collector())

    async def groups() -> list[str]:
        return [g.name for s in await bus.streams() for g in s.groups]

    await first.stop()
    assert sorted(await groups()) == sorted(["audit", mine])  # c2 still reads it
    await second.stop()
    await shared.stop()
    # A shared group keeps its place for consumers to come; the replica's own is gone.
    assert await groups() == ["audit"]


async def test_subscribing_to_an_event_without_a_type_fails(bus: InProcessEventBus) -> None:
    with pytest.raises(TypeError, match="does not set"):
        await bus.subscribe(Event, "audit", "c1", Collector())  # type: ignore[arg-type]


def test_request_completed_carries_no_content() -> None:
    payload = json.loads(completed().model_dump_json())
    assert set(payload) == {
        "id",
        "occurred_at",
        "model",
        "key_id",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "status",
        "stream",
        "endpoint",
        "team_id",
        "cost_usd",
        "routed_to",
        "failed_targets",
        "ttft_ms",
        "audited",  # whether the serving replica audited it (with text): a flag, not text
    }
    assert not any(name in payload for name in ("prompt", "completion", "messages", "input"))


def test_event_defaults_and_utc() -> None:
    first, second = completed(), completed()
    assert first.id != second.id
    assert len(first.id) == 32
    assert first.occurred_at.tzinfo is UTC
    assert RequestCompleted.type == "request.completed"
    assert RequestCompleted.version == 1
    naive = datetime(2026, 1, 2, 3, 4, 5)
    plus_two = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    for stamp in (naive, plus_two):
        event = RequestCompleted.model_validate({**completed().model_dump(), "occurred_at": stamp})
        assert event.occurred_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_event_ids_are_hex_unique_and_differ_between_processes() -> None:
    ids = [completed().id for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    code = (
        "from atrium.bus import RequestCompleted as R; print(R(model='m', key_id=None, "
        "prompt_tokens=0, completion_tokens=0, latency_ms=0, status=200, stream=False, "
        "endpoint='e').id)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(other) == 32
    assert other[:16] != ids[0][:16]  # each process draws its own prefix
