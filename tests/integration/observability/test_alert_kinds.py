"""The SLO burn-rate, budget, workers-missing and ingestion-failure rules, on real parts.

Metric series come from the real registry classes, budgets from the real spend ledger,
live consumers from real buses (Redis Streams on 127.0.0.1:6379), live workers from
the real worker directory, and e-mail goes to a real aiosmtpd server through the
whole platform's wiring of ``workflows.smtp``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import CollectorRegistry

from atrium.app import build_app, build_platform
from atrium.bus import InProcessEventBus, RedisStreamsEventBus, replica_group
from atrium.bus.events import AlertFired, KnowledgeSynced
from atrium.bus.redis_streams import DeliveryPolicy
from atrium.core.settings import Settings
from atrium.gateway.budgets import Budget, InProcessSpendLedger
from atrium.observability.alerts import AlertEngine
from atrium.observability.config import AlertRule
from atrium.observability.metrics import BudgetMetrics, BusMetrics, GatewayMetrics, WorkerMetrics
from atrium.observability.notifications import Notifications
from atrium.store import Database
from atrium.store.workflows import WorkflowRepository
from atrium.workflows.workers import WorkerMonitor
from tests.integration.observability._alerting import Clock

pytestmark = pytest.mark.integration


def _engine(rules: list[AlertRule], registry: CollectorRegistry, clock: Clock) -> AlertEngine:
    return AlertEngine(
        rules, registry, Notifications([], attempts=1, backoff_seconds=0), clock=clock
    )


def _requests(metrics: GatewayMetrics, status: int, n: int, seconds: float = 0.1) -> None:
    for _ in range(n):
        metrics.observe(
            model="m", endpoint="chat.completions", status=status, seconds=seconds,
            prompt_tokens=1, completion_tokens=1,
        )  # fmt: skip


# -- SLO burn rate ------------------------------------------------------------------------


def test_an_error_burn_rate_fires_only_while_both_windows_burn() -> None:
    metrics, clock = GatewayMetrics(), Clock()
    rule = AlertRule(
        name="fast-burn", kind="burn_rate", slo=0.99, labels={"model": "m"},
        window_seconds=3600, short_window_seconds=300, threshold=14.4,
    )  # fmt: skip
    engine = _engine([rule], metrics.registry, clock)
    engine.evaluate()  # the baseline
    # An hour at 1% errors burns the budget at exactly 1x: no alert.
    for _ in range(12):
        _requests(metrics, 200, 99)
        _requests(metrics, 500, 1)
        clock.now += 300
        assert engine.evaluate() == []
    assert engine.active == {}
    # Then 40% errors for five minutes: the short window burns at 40x, the hour at
    # about 4.2x (under 14.4): a spike that the long window has not confirmed.
    _requests(metrics, 200, 60)
    _requests(metrics, 500, 40)
    clock.now += 300
    assert engine.evaluate() == []
    # Still failing: the hour passes 14.4x too and the alert fires.
    for _ in range(6):
        _requests(metrics, 200, 60)
        _requests(metrics, 500, 40)
        clock.now += 300
        changed = engine.evaluate()
        if changed:
            break
    [fired] = changed
    assert fired.state == "firing"
    assert fired.value is not None
    assert fired.value > 14.4
    # Recovered: the short window is clean at once, so the alert resolves at once even
    # though the hour is still well over budget.
    _requests(metrics, 200, 100)
    clock.now += 300
    [resolved] = engine.evaluate()
    assert resolved.state == "resolved"
    assert resolved.value == 0.0


def test_a_latency_burn_rate_counts_requests_slower_than_the_objective() -> None:
    metrics, clock = GatewayMetrics(), Clock()
    rule = AlertRule(
        name="ttft-slo", kind="burn_rate", sli="latency", slo=0.95,
        metric="atrium_time_to_first_token_seconds", latency_seconds=0.5,
        window_seconds=600, threshold=2.0,
    )  # fmt: skip
    engine = _engine([rule], metrics.registry, clock)
    engine.evaluate()
    for seconds in [0.1] * 80 + [2.0] * 20:  # 20% slower than 0.5 s: 4x a 5% budget
        metrics.observe_first_token("m", "chat.completions", seconds)
    _requests(metrics, 200, 100, seconds=5.0)  # total latency is another metric: ignored
    clock.now += 60
    [fired] = engine.evaluate()
    assert fired.value == pytest.approx(4.0)
    clock.now += 60
    for _ in range(100):
        metrics.observe_first_token("m", "chat.completions", 0.05)
    [resolved] = engine.evaluate()  # the short window (50 s) holds only fast ones
    assert resolved.state == "resolved"


# -- budgets -------------------------------------------------------------------------------


async def test_a_budget_rule_fires_when_a_key_spends_most_of_its_budget() -> None:
    registry, clock = CollectorRegistry(), Clock()
    spent_before = {"key:k1": 3.0, "team:t1": 1.0}

    async def spend_since(subject: str, _: date | None) -> float:
        return spent_before.get(subject, 0.0)

    ledger = InProcessSpendLedger(spend_since, on_spend=BudgetMetrics(registry).spent)
    budgets = [Budget("key:k1", "key 'k1'", 10.0, "month"), Budget("team:t1", "team", 50.0, "day")]
    rule = AlertRule(name="budget-80", kind="budget", op=">=", threshold=0.8, severity="critical")
    engine = _engine([rule], registry, clock)
    assert engine.evaluate() == []  # no budget read yet: no series
    await ledger.check(budgets)
    assert engine.evaluate() == []  # 30% and 2%
    await ledger.charge(budgets, 5.5)  # the key at 85%
    [fired] = engine.evaluate()
    assert fired.value == pytest.approx(0.85)
    assert fired.labels == {"subject": "key:k1", "period": "month"}
    # A rule for teams alone does not see the key.
    teams = AlertRule(name="teams", kind="budget", labels={"period": "day"}, threshold=0.5)
    assert _engine([teams], registry, clock).evaluate() == []


# -- workers missing -----------------------------------------------------------------------


async def test_a_consumer_group_without_live_consumers_is_missing_on_the_in_process_bus() -> None:
    registry, clock = CollectorRegistry(), Clock()
    bus = InProcessEventBus()
    bus_metrics = BusMetrics(registry)
    rule = AlertRule(name="no-consumers", kind="workers_missing", labels={"group": "audit"})
    engine = _engine([rule], registry, clock)

    async def handle(_: AlertFired) -> None:
        return None

    subscription = await bus.subscribe(AlertFired, "audit", "c1", handle)
    await bus.publish(AlertFired(name="x", severity="info", summary="s"))
    bus_metrics.update(await bus.streams(), 0)
    assert engine.evaluate() == []
    await subscription.stop()
    bus_metrics.update(await bus.streams(), 0)
    [fired] = engine.evaluate()
    assert fired.value == 1.0
    assert fired.labels == {"group": "audit", "missing": "group=audit,topic=alert.fired"}
    await bus.close()


async def test_a_group_of_one_replica_left_behind_is_not_missing() -> None:
    """Route and key changes reach every replica through a group of its own; a replica that
    is gone leaves its group without consumers, and that is no outage."""
    registry, clock = CollectorRegistry(), Clock()
    bus = InProcessEventBus()
    bus_metrics = BusMetrics(registry)
    rule = AlertRule(name="no-consumers", kind="workers_missing")
    engine = _engine([rule], registry, clock)

    async def handle(_: AlertFired) -> None:
        return None

    # The group a replica that died left (a clean stop destroys it): no consumer reads it.
    await bus.replay(AlertFired.type, replica_group("keys"), "0")
    shared = await bus.subscribe(AlertFired, "ops", "c1", handle)
    await bus.publish(AlertFired(name="x", severity="info", summary="s"))
    bus_metrics.update(await bus.streams(), 0)
    assert engine.evaluate() == []
    await shared.stop()
    bus_metrics.update(await bus.streams(), 0)
    [fired] = engine.evaluate()
    assert fired.labels == {"missing": "group=ops,topic=alert.fired"}
    await bus.close()


async def test_a_group_destroyed_with_its_replica_loses_its_series() -> None:
    registry = CollectorRegistry()
    bus = InProcessEventBus()
    bus_metrics = BusMetrics(registry)

    async def handle(_: AlertFired) -> None:
        return None

    mine = replica_group("keys")
    subscription = await bus.subscribe(AlertFired, mine, "c", handle)
    await bus.subscribe(AlertFired, "ops", "c1", handle)
    labels = {"topic": AlertFired.type, "group": mine}
    bus_metrics.update(await bus.streams(), 0)
    assert registry.get_sample_value("atrium_bus_consumers_live", labels) == 1

    await subscription.stop()
    bus_metrics.update(await bus.streams(), 0)

    for metric in ("atrium_bus_consumers_live", "atrium_bus_pending", "atrium_bus_consumer_lag"):
        assert registry.get_sample_value(metric, labels) is None, metric
    shared = {"topic": AlertFired.type, "group": "ops"}
    assert registry.get_sample_value("atrium_bus_consumers_live", shared) == 1
    await bus.close()


async def test_redis_streams_counts_only_consumers_with_a_recent_heartbeat() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    prefix = f"atrium-test:{uuid4().hex}:"
    bus = RedisStreamsEventBus(
        client, stream_prefix=prefix, block_ms=50, policy=DeliveryPolicy(claim_idle_ms=1000)
    )

    async def handle(_: AlertFired) -> None:
        return None

    try:
        first = await bus.subscribe(AlertFired, "ops", "c1", handle)
        await bus.subscribe(AlertFired, "ops", "c2", handle)
        await bus.publish(AlertFired(name="x", severity="info", summary="s"))
        assert await _live_reaches(bus, 2)
        await first.stop()
        assert await _live_reaches(bus, 1)
        # A consumer that dies without stopping (its heartbeat ends) drops out too.
        await client.zadd(bus.presence_key(bus.stream_name("alert.fired"), "ops"), {"c9": 1.0})
        assert await _live_reaches(bus, 1)
    finally:
        await bus.close()
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _live_reaches(bus: RedisStreamsEventBus, live: int) -> bool:
    """Whether the one group's live consumers reach ``live`` within 30 s."""
    seen: int | None = None
    for _ in range(600):
        streams = await bus.streams()
        if streams and streams[0].groups:
            seen = streams[0].groups[0].live_consumers
            if seen == live:
                return True
        await asyncio.sleep(0.05)
    raise AssertionError(f"the group stayed at {seen} live consumers, never {live}")


class _NoRuns:
    async def pending_of(self, executor_id: str) -> list[str]:
        return []

    async def resume(self, run_id: str) -> None:
        return None


async def test_workflow_workers_gone_silent_are_missing(database: Database) -> None:
    registry, clock = CollectorRegistry(), Clock()
    now = [datetime.now(UTC)]
    repo = WorkflowRepository(database, clock=lambda: now[0])
    monitor = WorkerMonitor(
        repo, _NoRuns(), executor_id="w1", role="worker", heartbeat_seconds=1,
        takeover_after_seconds=10,
    )  # fmt: skip
    await repo.heartbeat("w2", "worker")
    await monitor.tick()
    worker_metrics = WorkerMetrics(registry)
    rule = AlertRule(
        name="workers", kind="workers_missing", metric="atrium_workflow_workers_live",
        min_live=2,
    )  # fmt: skip
    engine = _engine([rule], registry, clock)
    worker_metrics.update(await monitor.live())
    assert await monitor.live() == {"worker": 2}
    assert engine.evaluate() == []
    now[0] = datetime.now(UTC) - timedelta(seconds=60)  # w2's last beat, a minute ago
    await repo.heartbeat("w2", "worker")
    worker_metrics.update(await monitor.live())
    [fired] = engine.evaluate()
    assert fired.labels == {"missing": "role=worker"}
    assert registry.get_sample_value("atrium_workflow_workers_live", {"role": "worker"}) == 1


# -- ingestion failures --------------------------------------------------------------------


def _synced(failed: int, status: str = "ok") -> KnowledgeSynced:
    return KnowledgeSynced(
        kb_id="kb_1", knowledge_base="handbook", source_id="src_1", source="files",
        status=status, documents_seen=10, added=10 - failed, updated=0, deleted=0,
        failed_documents=failed,
    )  # fmt: skip


def test_an_ingestion_rule_sums_failed_documents_over_its_window() -> None:
    clock = Clock()
    rule = AlertRule(
        name="ingest-failures", kind="event", event="knowledge.sync.finished",
        sum_field="failed_documents", window_seconds=600, op=">=", threshold=5,
    )  # fmt: skip
    broken = AlertRule(
        name="sync-broken", kind="event", event="knowledge.sync.finished",
        match={"status": "failed"},
    )  # fmt: skip
    engine = _engine([rule, broken], CollectorRegistry(), clock)
    engine.observe_event(_synced(2))
    assert engine.evaluate() == []
    clock.now += 100
    engine.observe_event(_synced(3))
    [fired] = engine.evaluate()
    assert (fired.rule, fired.value) == ("ingest-failures", 5.0)
    engine.observe_event(_synced(0, status="failed"))
    [sync_broken] = engine.evaluate()
    assert sync_broken.rule == "sync-broken"
    clock.now += 600  # the first failures leave the window
    changed = {a.rule: a.state for a in engine.evaluate()}
    assert changed == {"ingest-failures": "resolved", "sync-broken": "resolved"}


# -- e-mail through the platform's SMTP settings --------------------------------------------


class Inbox:
    """An aiosmtpd handler keeping each message and each login."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append((envelope, message_from_bytes(envelope.content)))
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"mail-pass")


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1 (AUTH allowed without TLS, for the test only)."""
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate,
        auth_require_tls=False,
    )  # fmt: skip
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def test_an_email_notifier_mails_through_the_platforms_smtp_settings(
    tmp_path: Path, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": "atr-" + "b" * 40},
            "workflows": {
                "enabled": False,
                "smtp": {"host": "127.0.0.1", "port": port, "starttls": False,
                         "username": "alerts", "password_secret": "smtp-password",
                         "from_address": "atrium@example.test"},
            },
            "alerts": {
                "interval_seconds": 0.05,
                "attempts": 1,
                "rules": [{"name": "release-rolled-back", "kind": "event",
                           "event": "alert.fired", "severity": "critical",
                           "summary": "a release rolled back", "window_seconds": 60}],
                "notifiers": [{"name": "oncall", "kind": "email",
                               "to": ["oncall@example.test"]}],
            },
        }
    )  # fmt: skip
    platform = build_platform(settings, announce_key=lambda _: None)
    build_app(settings, platform)
    await platform.start()
    try:
        await platform.secrets.put("smtp-password", "mail-pass")
        await platform.bus.publish(AlertFired(name="release", severity="critical", summary="x"))
        for _ in range(1200):  # 30 s: a loaded machine
            if inbox.messages:
                break
            await asyncio.sleep(0.025)
        [(envelope, message)] = inbox.messages
        assert inbox.logins == [(b"alerts", b"mail-pass")]
        assert envelope.mail_from == "atrium@example.test"
        assert envelope.rcpt_tos == ["oncall@example.test"]
        assert " ".join(str(message["Subject"]).split()) == (  # unfolded
            "[FIRING] release-rolled-back (critical): a release rolled back (value 1)"
        )
        assert platform.alerts is not None
        [delivery] = platform.alerts.notifications.deliveries
        assert (delivery.notifier, delivery.ok) == ("oncall", True)
    finally:
        await platform.close()
