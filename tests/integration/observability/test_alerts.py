"""Alert rules fire and resolve against the real registry, notifying real local webhooks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from atrium.bus.events import AlertFired
from atrium.core.netguard import NetworkPolicy
from atrium.observability.alerts import AlertEngine, AlertMetrics
from atrium.observability.config import AlertRule, AlertSettings
from atrium.observability.metrics import GatewayMetrics
from atrium.observability.notifications import (
    Notifications,
    build_notifiers,
    webhook_client,
)
from tests.integration.observability._alerting import Clock, Receiver

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    engine: AlertEngine
    notifications: Notifications
    metrics: GatewayMetrics
    clock: Clock
    sleeps: list[float]


def _settings(receiver: Receiver, rules: list[dict[str, Any]]) -> AlertSettings:
    return AlertSettings.model_validate(
        {
            "rules": rules,
            "notifiers": [
                {"name": "ops", "kind": "webhook", "url": receiver.url("/ok")},
                {"name": "chat", "kind": "slack", "url": receiver.url("/ok")},
                {"name": "broken", "kind": "webhook", "url": receiver.url("/down")},
            ],
            "attempts": 3,
            "retry_backoff_seconds": 0.5,
        }
    )


@pytest_asyncio.fixture
async def rig(receiver: Receiver) -> AsyncIterator[Rig]:
    receiver.received.clear()
    receiver.down_calls = 0
    rules = [
        {
            "name": "errors-model-a",
            "kind": "error_rate",
            "labels": {"model": "model-a"},
            "window_seconds": 60,
            "threshold": 0.2,
            "for_seconds": 30,
            "severity": "critical",
            "summary": "model-a fails",
        }
    ]
    settings = _settings(receiver, rules)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    metrics = GatewayMetrics()
    counted = AlertMetrics(metrics.registry)
    # The receiver is on loopback: the operator allowed it, as an in-house receiver would be.
    client = webhook_client(settings, NetworkPolicy(allow_private=True))
    notifications = Notifications(
        build_notifiers(settings, client, None),
        attempts=settings.attempts,
        backoff_seconds=settings.retry_backoff_seconds,
        on_delivery=counted.delivered,
        sleep=sleep,
    )
    clock = Clock()
    engine = AlertEngine(settings.rules, metrics.registry, notifications, clock=clock)
    try:
        yield Rig(engine, notifications, metrics, clock, sleeps)
    finally:
        await notifications.close()
        await client.aclose()


def _requests(metrics: GatewayMetrics, model: str, status: int, n: int) -> None:
    for _ in range(n):
        metrics.observe(
            model=model, endpoint="chat.completions", status=status, seconds=0.1,
            prompt_tokens=3, completion_tokens=1,
        )  # fmt: skip


async def test_an_error_rate_rule_fires_after_its_for_duration_and_resolves(rig: Rig) -> None:
    engine, metrics, clock = rig.engine, rig.metrics, rig.clock
    assert engine.evaluate() == []  # the baseline reading
    _requests(metrics, "model-a", 200, 6)
    _requests(metrics, "model-a", 500, 4)
    _requests(metrics, "model-b", 500, 50)  # another model's errors do not count
    clock.now += 10
    assert engine.evaluate() == []
    assert engine.active["errors-model-a"].state == "pending"
    assert engine.active["errors-model-a"].value == pytest.approx(0.4)
    clock.now += 25  # 25 s pending: under the 30 s it must hold
    _requests(metrics, "model-a", 500, 1)
    assert engine.evaluate() == []
    clock.now += 10
    [fired] = engine.evaluate()
    assert fired.state == "firing"
    clock.now += 15
    assert engine.evaluate() == []  # still firing: not notified twice
    await rig.notifications.drain()
    # The window moves past the failures; healthy traffic brings the rate down.
    _requests(metrics, "model-a", 200, 100)
    clock.now += 61
    [resolved] = engine.evaluate()
    assert resolved.value == 0.0
    assert resolved.state == "resolved"
    assert "errors-model-a" not in engine.active
    await rig.notifications.drain()

    snapshot = engine.snapshot()
    assert snapshot["firing"] == []
    [public] = snapshot["resolved"]
    assert public["rule"] == "errors-model-a"
    assert public["fired_at"] is not None
    assert public["resolved_at"] is not None


async def test_notifications_reach_webhooks_and_a_down_one_is_retried_then_failed(
    rig: Rig, receiver: Receiver
) -> None:
    engine, metrics, clock = rig.engine, rig.metrics, rig.clock
    engine.evaluate()
    _requests(metrics, "model-a", 500, 10)
    clock.now += 1
    engine.evaluate()
    clock.now += 31
    [fired] = engine.evaluate()
    assert fired.state == "firing"
    await rig.notifications.drain()
    generic = [r for r in receiver.received if "rule" in r]
    slack = [r for r in receiver.received if "text" in r]
    assert len(generic) == 1
    assert generic[0]["state"] == "firing"
    assert generic[0]["rule"] == "errors-model-a"
    assert generic[0]["severity"] == "critical"
    assert generic[0]["labels"] == {"model": "model-a"}
    assert generic[0]["value"] == pytest.approx(1.0)
    assert slack == [{"text": "[FIRING] errors-model-a (critical): model-a fails (value 1)"}]
    # The down endpoint: tried three times with doubling backoff, then recorded as failed.
    assert receiver.down_calls == 3
    assert rig.sleeps == [0.5, 1.0]
    outcomes = {(d.notifier, d.ok, d.attempts) for d in rig.notifications.deliveries}
    assert outcomes == {("ops", True, 1), ("chat", True, 1), ("broken", False, 3)}
    [failed] = [d for d in rig.notifications.deliveries if not d.ok]
    assert failed.error == "webhook answered 503"
    registry = metrics.registry
    assert registry.get_sample_value(
        "atrium_alert_notifications_total", {"notifier": "broken", "outcome": "failed"}
    ) == 1.0  # fmt: skip
    assert registry.get_sample_value(
        "atrium_alert_notifications_total", {"notifier": "ops", "outcome": "delivered"}
    ) == 1.0  # fmt: skip


async def test_a_private_webhook_is_refused_without_retries_by_default(
    receiver: Receiver,
) -> None:
    settings = _settings(receiver, [])
    client = webhook_client(settings, NetworkPolicy())
    notifications = Notifications(
        build_notifiers(settings, client, None), attempts=3, backoff_seconds=0.0
    )
    rule = AlertRule(
        name="g", kind="gauge", metric="atrium_requests_in_flight", op=">=", threshold=0,
        notify=["ops"],
    )  # fmt: skip
    engine = AlertEngine(
        [rule],
        GatewayMetrics().registry,
        notifications,
    )
    receiver.received.clear()
    try:
        [fired] = engine.evaluate()
        await notifications.drain()
    finally:
        await client.aclose()
    assert fired.state == "firing"
    [delivery] = notifications.deliveries
    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.error is not None
    assert "refused to connect" in delivery.error
    assert receiver.received == []


async def test_an_event_rule_fires_on_a_matching_event_and_resolves_after_its_window(
    rig: Rig, receiver: Receiver
) -> None:
    clock = rig.clock
    rule = AlertRule(
        name="rolled-back", kind="event", event="alert.fired", match={"severity": "critical"},
        window_seconds=300, notify=["ops"],
    )  # fmt: skip
    engine = AlertEngine([rule], rig.metrics.registry, rig.notifications, clock=clock)
    assert engine.event_types() == {"alert.fired"}
    engine.observe_event(AlertFired(name="release", severity="warning", summary="slow"))
    assert engine.evaluate() == []  # not critical: no match
    engine.observe_event(
        AlertFired(name="release", severity="critical", summary="rolled back",
                   labels={"model": "m"})
    )  # fmt: skip
    [fired] = engine.evaluate()
    assert fired.labels == {"name": "release", "model": "m"}
    clock.now += 301
    [resolved] = engine.evaluate()
    assert resolved.state == "resolved"
    await rig.notifications.drain()
    assert [r["state"] for r in receiver.received if r.get("rule") == "rolled-back"] == [
        "firing",
        "resolved",
    ]


def test_p95_latency_and_increase_rules_read_the_histogram_and_counter() -> None:
    metrics = GatewayMetrics()
    clock = Clock()
    rules = [
        AlertRule(name="p95", kind="latency_quantile", metric="atrium_request_duration_seconds",
                  labels={"model": "m"}, threshold=1.0),
        AlertRule(name="tokens", kind="increase", metric="atrium_tokens",
                  labels={"direction": "completion"}, threshold=100),
    ]  # fmt: skip
    engine = AlertEngine(rules, metrics.registry, Notifications([], attempts=1, backoff_seconds=0),
                         clock=clock)  # fmt: skip
    engine.evaluate()
    for seconds in [0.2] * 90 + [4.0] * 10:
        metrics.observe(model="m", endpoint="chat.completions", status=200, seconds=seconds,
                        prompt_tokens=1, completion_tokens=2)  # fmt: skip
    clock.now += 10
    engine.evaluate()
    p95 = engine.active["p95"].value
    assert p95 is not None
    assert 2.5 < p95 <= 5.0  # the 95th of 100 falls in the (2.5, 5] bucket
    assert engine.active["tokens"].value == 200.0
    assert engine.active["tokens"].state == "firing"
