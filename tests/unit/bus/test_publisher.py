"""EventPublisher: never waits on the bus, counts drops and failures, drains on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from atrium.bus import (
    Event,
    EventPublisher,
    InProcessEventBus,
    KeyChanged,
    RequestCompleted,
    replica_group,
)

TIMEOUT_S = 5.0


def completed(n: int = 0) -> RequestCompleted:
    return RequestCompleted(
        model="smollm2",
        key_id=None,
        prompt_tokens=n,
        completion_tokens=n,
        latency_ms=1.0,
        status=200,
        stream=True,
        endpoint="chat.completions",
    )


class GatedBus(InProcessEventBus):
    """The real in-process bus, with a gate in front of publish and an optional failure.

    Lets a test hold the publisher's drain task inside ``publish`` (a slow bus) or make
    a publish fail (a bus that is down), which the in-process bus never does.
    """

    def __init__(self, *, fail_ids: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail_ids = fail_ids
        self.published: list[str] = []

    async def publish(self, event: Event) -> str:
        self.entered.set()
        await self.gate.wait()
        if event.id in self.fail_ids:
            raise ConnectionError("bus down")
        self.published.append(event.id)
        return await super().publish(event)


@pytest.fixture
async def bus() -> AsyncIterator[GatedBus]:
    bus = GatedBus()
    yield bus
    await bus.close()


def test_publish_nowait_counts_drops_when_full(bus: GatedBus) -> None:
    publisher = EventPublisher(bus, max_queue_size=2)

    results = [publisher.publish_nowait(completed(n)) for n in range(5)]

    assert results == [True, True, False, False, False]
    assert publisher.dropped == 3


async def test_publish_nowait_never_waits_on_a_slow_bus(bus: GatedBus) -> None:
    publisher = EventPublisher(bus, max_queue_size=2)
    await publisher.start()
    bus.gate.clear()
    sent = [completed(n) for n in range(4)]

    assert publisher.publish_nowait(sent[0])
    await asyncio.wait_for(bus.entered.wait(), TIMEOUT_S)  # drain task is stuck in publish
    assert [publisher.publish_nowait(event) for event in sent[1:]] == [True, True, False]
    assert publisher.dropped == 1

    bus.gate.set()
    await publisher.close()
    assert bus.published == [event.id for event in sent[:3]]
    assert publisher.published == 3


async def test_published_events_reach_subscribers(bus: GatedBus) -> None:
    received: list[Event] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        received.append(event)
        done.set()

    await bus.subscribe(RequestCompleted, "audit", "c1", handler)
    publisher = EventPublisher(bus)
    await publisher.start()
    sent = completed()

    assert publisher.publish_nowait(sent)

    await asyncio.wait_for(done.wait(), TIMEOUT_S)
    await publisher.close()
    assert received == [sent]


async def test_bus_errors_are_logged_and_counted_and_draining_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad, good = completed(1), completed(2)
    bus = GatedBus(fail_ids=frozenset({bad.id}))
    publisher = EventPublisher(bus)
    await publisher.start()

    with caplog.at_level(logging.ERROR, logger="atrium.bus"):
        publisher.publish_nowait(bad)
        publisher.publish_nowait(good)
        await publisher.close()

    assert (publisher.failed, publisher.published, publisher.dropped) == (1, 1, 0)
    assert bus.published == [good.id]
    failures = [r for r in caplog.records if r.name == "atrium.bus" and r.exc_info]
    assert len(failures) == 1
    assert bad.id in failures[0].getMessage()


async def test_close_gives_up_after_its_timeout(bus: GatedBus) -> None:
    publisher = EventPublisher(bus, close_timeout_s=0.01)
    await publisher.start()
    bus.gate.clear()  # the bus never answers
    publisher.publish_nowait(completed(1))
    await asyncio.wait_for(bus.entered.wait(), TIMEOUT_S)
    publisher.publish_nowait(completed(2))

    await asyncio.wait_for(publisher.close(), TIMEOUT_S)

    assert publisher.dropped == 2  # one cut off mid-publish, one never taken
    assert bus.published == []


async def test_publish_after_close_is_refused(bus: GatedBus) -> None:
    publisher = EventPublisher(bus)
    await publisher.start()
    await publisher.close()

    assert not publisher.publish_nowait(completed())
    assert publisher.dropped == 1


async def test_close_without_start_counts_queued_events_as_dropped(bus: GatedBus) -> None:
    publisher = EventPublisher(bus)
    publisher.publish_nowait(completed())

    await publisher.close()

    assert publisher.dropped == 1
    assert bus.published == []


class FlakyBus(GatedBus):
    """The gated bus, refusing each event's first ``failures`` publishes (a bus that is
    down for a while, then back)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.tries: dict[str, int] = {}

    async def publish(self, event: Event) -> str:
        self.tries[event.id] = self.tries.get(event.id, 0) + 1
        if self.tries[event.id] <= self.failures:
            raise ConnectionError("bus down")
        return await super().publish(event)


async def test_an_urgent_event_is_taken_when_the_queue_is_full(bus: GatedBus) -> None:
    received: list[Event] = []
    done = asyncio.Event()

    async def handler(event: KeyChanged) -> None:
        received.append(event)
        done.set()

    await bus.subscribe(KeyChanged, replica_group("keys"), "c", handler)
    publisher = EventPublisher(bus, max_queue_size=2)
    assert [publisher.publish_nowait(completed(n)) for n in range(3)] == [True, True, False]
    revoked = KeyChanged(key_id="k1")

    assert publisher.publish_urgent(revoked)
    await publisher.start()

    await asyncio.wait_for(done.wait(), TIMEOUT_S)
    await publisher.close()
    assert received == [revoked]
    assert (publisher.dropped, publisher.published) == (1, 3)


async def test_a_refused_urgent_event_is_retried_until_the_bus_takes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = FlakyBus(failures=3)
    publisher = EventPublisher(bus, retry_backoff_s=0.001, retry_backoff_max_s=0.004)
    await publisher.start()
    revoked = KeyChanged(key_id="k1")

    with caplog.at_level(logging.ERROR, logger="atrium.bus"):
        publisher.publish_urgent(revoked)
        await publisher.close()

    assert bus.published == [revoked.id]
    assert (publisher.failed, publisher.published, publisher.dropped) == (3, 1, 0)
    assert sum(revoked.id in r.getMessage() for r in caplog.records) == 3
    await bus.close()


async def test_close_names_the_urgent_events_it_gives_up_on(
    bus: GatedBus, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = EventPublisher(bus, close_timeout_s=0.01)
    await publisher.start()
    bus.gate.clear()  # the bus never answers
    revoked = KeyChanged(key_id="k1")
    publisher.publish_urgent(revoked)
    await asyncio.wait_for(bus.entered.wait(), TIMEOUT_S)

    with caplog.at_level(logging.ERROR, logger="atrium.bus"):
        await asyncio.wait_for(publisher.close(), TIMEOUT_S)

    assert publisher.dropped == 1
    assert any(revoked.id in r.getMessage() for r in caplog.records)
    assert not publisher.publish_urgent(KeyChanged(key_id="k2"))
    assert publisher.dropped == 2
