"""Every alert that fires or resolves is announced on the bus (``alert.fired``,
``alert.resolved``), and those announcements never feed event rules: an alert cannot
re-trigger alerts in a loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, Gauge
from pydantic import ValidationError

from atrium.bus import Event, EventPublisher, InProcessEventBus
from atrium.bus.events import AlertFired, AlertResolved
from atrium.core.netguard import NetworkPolicy
from atrium.observability.alerts import AlertService, build_alert_service
from atrium.observability.config import AlertRule, AlertSettings

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    """An alert service on a real in-process bus, a gauge it watches, and what was published."""

    service: AlertService
    bus: InProcessEventBus
    gauge: Gauge
    events: list[Event]

    async def until(self, what: str, check: Callable[[], bool]) -> None:
        for _ in range(400):
            if check():
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"not {what}: {self.events}, {self.service.engine.snapshot()}")


RULES = [
    {"name": "queue-deep", "kind": "gauge", "metric": "test_queue_depth", "threshold": 10,
     "severity": "critical", "summary": "the queue is deep"},
    {"name": "echo", "kind": "event", "event": "alert.fired", "window_seconds": 60,
     "summary": "an alert fired"},
]  # fmt: skip


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    registry = CollectorRegistry()
    gauge = Gauge("test_queue_depth", "A queue's depth.", registry=registry)
    bus = InProcessEventBus()
    await bus.start()
    publisher = EventPublisher(bus)
    await publisher.start()
    events: list[Event] = []

    async def keep(event: Event) -> None:
        events.append(event)

    await bus.subscribe(AlertFired, "test", "c", keep)
    await bus.subscribe(AlertResolved, "test", "c", keep)
    settings = AlertSettings.model_validate({"interval_seconds": 0.02, "rules": RULES})
    service = build_alert_service(
        settings, registry, bus=bus, policy=NetworkPolicy(), publish=publisher.publish_nowait
    )
    assert service is not None
    await service.start()
    try:
        yield Rig(service, bus, gauge, events)
    finally:
        await service.close()
        await publisher.close()
        await bus.close()


async def test_a_rule_that_fires_and_resolves_is_announced_both_times(rig: Rig) -> None:
    rig.gauge.set(25)
    await rig.until("fired", lambda: any(isinstance(e, AlertFired) for e in rig.events))
    rig.gauge.set(0)
    await rig.until("resolved", lambda: any(isinstance(e, AlertResolved) for e in rig.events))
    fired, resolved = rig.events
    assert isinstance(fired, AlertFired)
    assert isinstance(resolved, AlertResolved)
    assert (fired.name, fired.rule, fired.severity, fired.value) == (
        "queue-deep", "queue-deep", "critical", 25.0,
    )  # fmt: skip
    assert fired.summary == "the queue is deep"
    assert (resolved.rule, resolved.severity, resolved.value) == ("queue-deep", "critical", 0.0)
    assert resolved.fired_at is not None
    assert resolved.fired_at <= resolved.occurred_at


async def test_an_alerts_own_events_never_trigger_an_event_rule(rig: Rig) -> None:
    rig.gauge.set(25)
    await rig.until("fired", lambda: len(rig.events) == 1)
    # The service's own subscription has seen the rule's alert.fired by now (it is
    # delivered to every group alike); a few more evaluations pass without 'echo'.
    await asyncio.sleep(0.2)
    assert "echo" not in rig.service.engine.active
    assert [e.rule for e in rig.events if isinstance(e, AlertFired)] == ["queue-deep"]
    # An alert a service raises itself (a rolled-back release) still counts.
    await rig.bus.publish(AlertFired(name="release", severity="critical", summary="rolled back"))
    await rig.until("echo fired", lambda: any(getattr(e, "rule", "") == "echo" for e in rig.events))
    assert rig.service.engine.active["echo"].state == "firing"
    await asyncio.sleep(0.2)
    # echo's own alert.fired did not count for echo either: one event seen, not two.
    assert rig.service.engine.active["echo"].value == 1.0


def test_a_rule_over_alert_resolved_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"alert\.resolved events never count"):
        AlertRule(name="loop", kind="event", event="alert.resolved")
