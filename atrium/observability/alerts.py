"""Alerting: rules over the platform's own metrics and bus events, evaluated continuously.

:class:`AlertEngine` reads the Prometheus registry (no scrape: the samples in memory),
keeps a short history per rule to measure over its window, and moves each rule's alert
through pending -> firing -> resolved with its ``for`` duration. Each alert notifies
once when it fires and once when it resolves (de-duplication: a firing alert is not
sent again while it keeps firing). :class:`AlertService` runs the engine on an
interval, feeds it bus events and refreshes the bus metrics it may read.

With several replicas, each evaluates every rule: event rules hear every event (a
consumer group of the replica's own), metric rules read the replica's own registry
(fleet-wide metric alerting is Prometheus' job: ``deploy/prometheus-rules.yaml``). With
Redis, each transition is claimed fleet-wide (:mod:`atrium.observability.alert_claims`)
so that it is notified, and announced on the bus, once; an alert whose firing replicas
all died is resolved by a live replica that does not fire it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.samples import Sample

from atrium.bus.admin import ManagedBus
from atrium.bus.base import (
    Event,
    Subscription,
    cancel_and_wait,
    is_replica_group,
    raise_if_cancel_requested,
    replica_group,
)
from atrium.bus.events import EVENT_TYPES, AlertFired, AlertResolved
from atrium.core.netguard import NetworkPolicy
from atrium.observability.alert_claims import FleetClaims, ToldAlert
from atrium.observability.config import AlertRule, AlertSettings
from atrium.observability.metrics import BusMetrics, WorkerMetrics
from atrium.observability.notifications import (
    Delivery,
    Notice,
    Notifications,
    RevealSecret,
    SmtpServer,
    build_notifiers,
    webhook_client,
)

log = logging.getLogger("atrium.alerts")

State = Literal["pending", "firing", "resolved"]
Clock = Callable[[], float]
#: Hands an event to the bus without waiting (``EventPublisher.publish_nowait``).
Publish = Callable[[Event], object]
#: Live workflow workers by role (the worker directory's reading).
LiveWorkers = Callable[[], Awaitable[Mapping[str, int]]]
DEFAULT_LATENCY_METRIC = "atrium_request_duration_seconds"
REQUESTS_SAMPLE = "atrium_requests_total"
BUDGET_SAMPLE = "atrium_budget_spent_ratio"
DEFAULT_WORKERS_METRIC = "atrium_bus_consumers_live"
#: How long a firing replica's fleet claim outlives its last evaluation (at least).
CLAIM_TTL_MIN_SECONDS = 30.0
_COMPARE: Mapping[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
}  # fmt: skip


@dataclass(slots=True)
class Alert:
    """One rule's alert: when it started, fired and resolved, and its last value."""

    rule: str
    severity: str
    summary: str
    state: State
    value: float | None
    labels: dict[str, str]
    started_at: datetime
    started: float  # on the engine's clock, for the ``for`` duration
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    replica: str = ""  # the replica whose engine evaluated it
    # With fleet claims: the Redis key claimed when it fired, whether this replica sent
    # the firing notification, and set once that claim is settled.
    claim_key: str | None = None
    sent_firing: bool = False
    claimed: asyncio.Event = field(default_factory=asyncio.Event)

    def to_public(self) -> dict[str, Any]:
        """The JSON shape of the admin API."""
        return {
            "rule": self.rule, "state": self.state, "severity": self.severity,
            "summary": self.summary, "value": self.value, "labels": self.labels,
            "replica": self.replica,
            "started_at": self.started_at.isoformat(),
            "fired_at": self.fired_at.isoformat() if self.fired_at else None,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }  # fmt: skip

    def notice(self) -> Notice:
        """What the notifiers are told."""
        since = self.resolved_at or self.fired_at or self.started_at
        return Notice(self.rule, self.state, self.severity, self.summary, self.value,
                      self.labels, since)  # fmt: skip


@dataclass(slots=True)
class _History:
    """Readings of one rule, bounded to its window plus one baseline before it."""

    window: float
    points: deque[tuple[float, Any]] = field(default_factory=deque)

    def add(self, now: float, reading: Any) -> Any:
        """Keep ``reading``; the baseline it is compared with (the oldest in the window)."""
        self.points.append((now, reading))
        while len(self.points) >= 2 and self.points[1][0] <= now - self.window:
            self.points.popleft()
        return self.points[0][1]

    def since(self, now: float, window: float) -> Any:
        """The baseline of a window shorter than the kept one (the newest reading before it)."""
        base = self.points[0][1]
        for at, reading in self.points:
            if at > now - window:
                break
            base = reading
        return base


def _matches(sample: Sample, labels: Mapping[str, str]) -> bool:
    return all(sample.labels.get(k) == v for k, v in labels.items())


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative bucket counts (None: no data)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank, lower, below = q * buckets[bounds[-1]], 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # above the highest finite bucket: its bound, as Prometheus does
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def _number(value: object) -> float:
    """An event field as a number (0 for a missing or non-numeric one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _errors(rule: AlertRule, samples: Iterable[Sample]) -> tuple[float, float]:
    """(5xx requests, all requests) of the matching series, as counted so far."""
    name = rule.metric or REQUESTS_SAMPLE
    if not name.endswith("_total"):
        name = f"{name}_total"
    bad = total = 0.0
    for s in samples:
        if s.name == name and _matches(s, rule.labels):
            total += s.value
            if s.labels.get("status", "").startswith("5"):
                bad += s.value
    return bad, total


def _slow(rule: AlertRule, samples: Iterable[Sample]) -> tuple[float, float]:
    """(requests slower than ``latency_seconds``, all requests) from a histogram's buckets.

    A request counts as fast when it fell in a bucket whose bound is at most
    ``latency_seconds``; pick a threshold that is a bucket bound for an exact count.
    """
    bucket_name = f"{rule.metric or DEFAULT_LATENCY_METRIC}_bucket"
    buckets: dict[float, float] = {}
    for s in samples:
        if s.name == bucket_name and _matches(s, rule.labels):
            bound = float(s.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + s.value
    total = buckets.get(math.inf, 0.0)
    fast = max((c for b, c in buckets.items() if b <= rule.latency_seconds), default=0.0)
    return total - fast, total


class AlertEngine:
    """Evaluates rules against a registry and events; keeps alerts and notifies changes."""

    def __init__(
        self,
        rules: list[AlertRule],
        registry: CollectorRegistry,
        notifications: Notifications,
        *,
        history: int = 200,
        clock: Clock = time.monotonic,
        publish: Publish | None = None,
        claims: FleetClaims | None = None,
        replica: str | None = None,
    ) -> None:
        self.rules = list(rules)
        self._publish = publish
        self._claims = claims
        self.replica = replica or (claims.replica if claims is not None else this_replica())
        self._registry = registry
        self._notifications = notifications
        self._clock = clock
        self._by_name = {r.name: r for r in self.rules}
        self._histories = {r.name: _History(r.window_seconds) for r in self.rules}
        self._events_sum: dict[str, deque[tuple[float, float]]] = {
            r.name: deque() for r in self.rules
        }
        # Labels a reading found (the event's name, the subject over budget, ...).
        self._found: dict[str, dict[str, str]] = {}
        self.active: dict[str, Alert] = {}
        self.resolved: deque[Alert] = deque(maxlen=history)

    def event_types(self) -> set[str]:
        """The bus event types the rules listen to."""
        return {r.event for r in self.rules if r.kind == "event" and r.event}

    def observe_event(self, event: Event) -> None:
        """Count ``event`` for every event rule it matches.

        The ``alert.fired`` and ``alert.resolved`` events of alert rules (any replica's)
        count for no rule: one rule's alert would otherwise re-trigger others in a loop.
        """
        if isinstance(event, AlertFired | AlertResolved) and event.rule is not None:
            return
        fields = event.model_dump(mode="json")
        for rule in self.rules:
            if rule.kind != "event" or rule.event != event.type:
                continue
            if all(str(fields.get(k)) == v for k, v in rule.match.items()):
                amount = _number(fields.get(rule.sum_field)) if rule.sum_field else 1.0
                self._events_sum[rule.name].append((self._clock(), amount))
                labels = fields.get("labels")
                extra = labels if isinstance(labels, dict) else {}
                name = fields.get("name")
                self._found[rule.name] = {
                    **({"name": str(name)} if name else {}),
                    **{k: str(v) for k, v in extra.items()},
                }

    def evaluate(self) -> list[Alert]:
        """One pass over every rule; the alerts that fired or resolved in it."""
        now = self._clock()
        samples = [s for metric in self._registry.collect() for s in metric.samples]
        changed = []
        for rule in self.rules:
            alert = self._step(rule, self._value(rule, samples, now), now)
            if alert is not None:
                changed.append(alert)
        return changed

    def _value(self, rule: AlertRule, samples: list[Sample], now: float) -> float | None:
        history = self._histories[rule.name]
        if rule.kind == "error_rate":
            bad, total = _errors(rule, samples)
            base_bad, base_total = history.add(now, (bad, total))
            seen = total - base_total
            return (bad - base_bad) / seen if seen > 0 else None
        if rule.kind == "latency_quantile":
            return self._latency(rule, samples, history, now)
        if rule.kind == "burn_rate":
            return self._burn_rate(rule, samples, history, now)
        return self._reading(rule, samples, history, now)

    def _reading(
        self, rule: AlertRule, samples: list[Sample], history: _History, now: float
    ) -> float | None:
        """The kinds read straight off the registry or the events seen."""
        if rule.kind == "event":
            seen = self._events_sum[rule.name]
            while seen and seen[0][0] < now - rule.window_seconds:
                seen.popleft()
            return float(sum(amount for _, amount in seen))
        if rule.kind == "budget":
            return self._budget(rule, samples)
        if rule.kind == "workers_missing":
            return self._workers_missing(rule, samples)
        value = self._sample(rule, samples)
        if rule.kind == "gauge":
            return value
        base = history.add(now, value)
        return value - base if value >= base else value  # a counter reset starts again

    def _sample(self, rule: AlertRule, samples: list[Sample]) -> float:
        name = rule.metric or ""
        names = {name, f"{name}_total"}
        return sum(s.value for s in samples if s.name in names and _matches(s, rule.labels))

    def _latency(
        self, rule: AlertRule, samples: list[Sample], history: _History, now: float
    ) -> float | None:
        bucket_name = f"{rule.metric or DEFAULT_LATENCY_METRIC}_bucket"
        buckets: dict[float, float] = {}
        for s in samples:
            if s.name == bucket_name and _matches(s, rule.labels):
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
        base: dict[float, float] = history.add(now, buckets)
        return quantile(rule.quantile, {b: c - base.get(b, 0.0) for b, c in buckets.items()})

    def _burn_rate(
        self, rule: AlertRule, samples: list[Sample], history: _History, now: float
    ) -> float | None:
        """The lower of the long and short windows' burn rates (both must burn to alert)."""
        bad, total = (_slow if rule.sli == "latency" else _errors)(rule, samples)
        long_base = history.add(now, (bad, total))
        short_base = history.since(now, rule.short_window)
        budget = 1.0 - rule.slo
        rates: list[float] = []
        for base_bad, base_total in (long_base, short_base):
            seen = total - base_total
            if seen <= 0:
                return None
            rates.append(float(bad - base_bad) / seen / budget)
        return min(rates)

    def _budget(self, rule: AlertRule, samples: list[Sample]) -> float | None:
        """The highest spent share among matching budgets, naming its subject."""
        spent = [s for s in samples if s.name == BUDGET_SAMPLE and _matches(s, rule.labels)]
        if not spent:
            self._found.pop(rule.name, None)
            return None
        top = max(spent, key=lambda s: s.value)
        self._found[rule.name] = dict(top.labels)
        return float(top.value)

    def _workers_missing(self, rule: AlertRule, samples: list[Sample]) -> float:
        """How many matching pools have fewer live members than the rule asks for."""
        name = rule.metric or DEFAULT_WORKERS_METRIC
        short = [
            s for s in samples
            if s.name == name and _matches(s, rule.labels) and s.value < rule.min_live
            and not is_replica_group(s.labels.get("group", ""))
        ]  # fmt: skip
        pools = sorted(",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) for s in short)
        self._found[rule.name] = {"missing": "; ".join(pools)} if pools else {}
        return float(len(short))

    def _step(self, rule: AlertRule, value: float | None, now: float) -> Alert | None:
        holds = value is not None and _COMPARE[rule.op](value, rule.threshold)
        alert = self.active.get(rule.name)
        if holds:
            if alert is None:
                alert = self._pending(rule, value, now)
            alert.value = value
            alert.labels = self._labels(rule)
            if alert.state == "pending" and now - alert.started >= rule.for_seconds:
                return self._transition(rule, alert, "firing")
            return None
        if alert is None:
            return None
        if alert.state == "pending":
            del self.active[rule.name]  # never fired: nobody was told, nobody is told now
            return None
        alert.value = value
        return self._transition(rule, alert, "resolved")

    def _pending(self, rule: AlertRule, value: float | None, now: float) -> Alert:
        alert = Alert(rule.name, rule.severity, rule.summary, "pending", value,
                      self._labels(rule), datetime.now(UTC), now, replica=self.replica)  # fmt: skip
        self.active[rule.name] = alert
        return alert

    def _labels(self, rule: AlertRule) -> dict[str, str]:
        return {**rule.labels, **self._found.get(rule.name, {})}

    def _transition(self, rule: AlertRule, alert: Alert, state: State) -> Alert:
        alert.state = state
        if state == "firing":
            alert.fired_at = datetime.now(UTC)
        else:
            alert.resolved_at = datetime.now(UTC)
            del self.active[rule.name]
            self.resolved.appendleft(alert)
        log.warning("alert %s %s (value %s)", rule.name, state, alert.value)
        if self._claims is None:
            self._notifications.notify(alert.notice(), rule.notify)
            if self._publish is not None:
                self._publish(_event_of(alert))
        else:
            claim = self._claim(self._claims, alert, state)
            self._notifications.notify(alert.notice(), rule.notify, claim=claim)
        return alert

    def _claim(
        self, claims: FleetClaims, alert: Alert, state: State
    ) -> Callable[[], Awaitable[bool]]:
        """Claims ``alert``'s transition to ``state`` for the fleet; the winner announces
        it on the bus too. A resolve waits for its firing's claim to settle."""
        if state == "firing":
            alert.claim_key = claims.key(alert.rule, alert.labels)
        key = alert.claim_key or claims.key(alert.rule, alert.labels)
        event = _event_of(alert)
        told = _told(alert, self.replica)

        async def claim() -> bool:
            if state == "firing":
                try:
                    won = alert.sent_firing = await claims.firing(key, told)
                finally:
                    alert.claimed.set()
            else:
                await alert.claimed.wait()
                won = await claims.resolved(key, sent_firing=alert.sent_firing)
            if won and self._publish is not None:
                self._publish(event)
            return won

        return claim

    async def keep_claims(self) -> None:
        """Tell the fleet this replica still fires its firing alerts (with claims)."""
        if self._claims is not None:
            keys = [a.claim_key for a in self.active.values() if a.state == "firing"]
            await self._claims.keep([k for k in keys if k is not None])

    async def resolve_abandoned(self) -> list[Alert]:
        """Send the resolve of each alert the fleet was told fires whose firing replicas
        are all gone (died, or stopped for longer than their claims' TTL) and that this
        replica does not fire or hold pending; return those alerts (none without claims)."""
        if self._claims is None:
            return []
        here = {self._claims.key(a.rule, a.labels) for a in self.active.values()}
        here |= {a.claim_key for a in self.active.values() if a.claim_key is not None}
        return [self._resolve_told(told) for told in await self._claims.abandoned(here)]

    def _resolve_told(self, told: ToldAlert) -> Alert:
        now = datetime.now(UTC)
        alert = Alert(told.rule, told.severity, told.summary, "resolved", None, told.labels,
                      told.fired_at, self._clock(), fired_at=told.fired_at, resolved_at=now,
                      replica=self.replica)  # fmt: skip
        log.warning("alert %s resolved: %s, the last replica firing it, is gone",
                    told.rule, told.replica)  # fmt: skip
        self.resolved.appendleft(alert)
        rule = self._by_name.get(told.rule)  # a rule since removed: every notifier
        self._notifications.notify(alert.notice(), rule.notify if rule is not None else [])
        if self._publish is not None:
            self._publish(_event_of(alert))
        return alert

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Alerts by state, for the admin API."""
        by_state: dict[str, list[dict[str, Any]]] = {"firing": [], "pending": [], "resolved": []}
        for alert in self.active.values():
            by_state[alert.state].append(alert.to_public())
        by_state["resolved"] = [a.to_public() for a in self.resolved]
        return by_state


def this_replica() -> str:
    """A name for this replica: host, process and a random part (two in one process)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _told(alert: Alert, replica: str) -> ToldAlert:
    """What the fleet keeps of a firing ``alert`` for its resolve."""
    fired_at = alert.fired_at or alert.started_at
    return ToldAlert(alert.rule, alert.severity, alert.summary, dict(alert.labels), fired_at,
                     replica)  # fmt: skip


def _event_of(alert: Alert) -> AlertFired | AlertResolved:
    """The bus event of an alert that just fired or resolved."""
    labels = dict(alert.labels)
    if alert.state == "firing":
        return AlertFired(name=alert.rule, rule=alert.rule, severity=alert.severity,
                          summary=alert.summary, labels=labels, value=alert.value)  # fmt: skip
    return AlertResolved(name=alert.rule, rule=alert.rule, severity=alert.severity,
                         summary=alert.summary, labels=labels, value=alert.value,
                         fired_at=alert.fired_at)  # fmt: skip


class AlertMetrics:
    """Counts notifications by notifier and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "atrium_alert_notifications",
            "Alert notifications by notifier and outcome (delivered, failed, or "
            "another_replica: claimed and sent by another replica).",
            ["notifier", "outcome"],
            registry=registry,
        )

    def delivered(self, delivery: Delivery) -> None:
        """Count one delivery (Notifications' ``on_delivery``)."""
        outcome = "delivered" if delivery.ok else "failed"
        if delivery.by_another_replica:
            outcome = "another_replica"
        self.notifications.labels(delivery.notifier, outcome).inc()


class AlertService:
    """Runs an :class:`AlertEngine` every ``interval_seconds``, fed by the bus.

    Event rules subscribe in a consumer group of this replica's own (``alerts-...``,
    destroyed when it stops, swept by the others when it dies): every replica's engine
    counts every event, so a count threshold means the same on each.
    """

    def __init__(
        self,
        engine: AlertEngine,
        notifications: Notifications,
        settings: AlertSettings,
        *,
        bus: ManagedBus | None = None,
        bus_metrics: BusMetrics | None = None,
        workers: LiveWorkers | None = None,
        worker_metrics: WorkerMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.notifications = notifications
        self._interval = settings.interval_seconds
        self._bus = bus
        self._bus_metrics = bus_metrics
        self._workers = workers
        self._worker_metrics = worker_metrics
        self._subscriptions: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe to the rules' event types and start evaluating."""
        if self._bus is not None:
            group, consumer = replica_group("alerts"), "c"
            for name in sorted(self.engine.event_types()):
                event_type = EVENT_TYPES.get(name)
                if event_type is None:
                    log.warning("alert rules name an unknown event type %r", name)
                    continue
                self._subscriptions.append(
                    await self._bus.subscribe(event_type, group, consumer, self._on_event)
                )
        self._task = asyncio.create_task(self._run())

    async def _on_event(self, event: Event) -> None:
        self.engine.observe_event(event)

    async def tick(self) -> None:
        """Refresh the bus and worker metrics, then evaluate every rule once."""
        if self._bus is not None and self._bus_metrics is not None:
            await self._bus_metrics.refresh(self._bus)
        if self._workers is not None and self._worker_metrics is not None:
            self._worker_metrics.update(await self._workers())
        self.engine.evaluate()
        await self.engine.keep_claims()
        await self.engine.resolve_abandoned()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                # The loop must outlive a failing bus or registry: log, and try next time.
                log.exception("alert evaluation failed")
            raise_if_cancel_requested()  # one that redis-py swallowed (a tick is all Redis)
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        """Stop evaluating, unsubscribe, cancel deliveries still retrying."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        for subscription in self._subscriptions:
            await subscription.stop()
        await self.notifications.close()


def build_alert_service(
    settings: AlertSettings,
    registry: CollectorRegistry,
    *,
    bus: ManagedBus | None,
    policy: NetworkPolicy,
    smtp: SmtpServer | None = None,
    reveal: RevealSecret | None = None,
    workers: LiveWorkers | None = None,
    publish: Publish | None = None,
    bus_metrics: BusMetrics | None = None,
    redis: aioredis.Redis | None = None,
    replica: str | None = None,
) -> AlertService | None:
    """The alert service the settings describe; None when disabled or without rules.

    It refreshes ``bus_metrics`` (``atrium_bus_*``, registered here when not given), and
    registers the live workflow workers (``atrium_workflow_workers_live``, when ``workers``
    is given) and the notification counter. ``reveal`` reads the SMTP password's secret
    when a mail is sent; ``publish`` announces every alert that fires or resolves. With
    ``redis`` (several replicas may run), each transition is notified and announced by
    one replica of the fleet (:class:`FleetClaims`, under ``alerts.redis_prefix``).
    """
    if not settings.enabled or not settings.rules:
        return None
    counted = AlertMetrics(registry)
    client = webhook_client(settings, policy)
    notifications = Notifications(
        build_notifiers(settings, client, smtp, reveal),
        attempts=settings.attempts,
        backoff_seconds=settings.retry_backoff_seconds,
        history=settings.history,
        on_delivery=counted.delivered,
        on_close=client.aclose,
    )
    name = replica or this_replica()
    claims = None
    if redis is not None:
        # Each firing replica renews its claim every evaluation; one silent this long is gone.
        ttl = settings.claim_ttl_seconds or max(
            CLAIM_TTL_MIN_SECONDS, 4 * settings.interval_seconds
        )
        claims = FleetClaims(redis, name, prefix=settings.redis_prefix, ttl_seconds=ttl)
    engine = AlertEngine(settings.rules, registry, notifications, history=settings.history,
                         publish=publish, claims=claims, replica=name)  # fmt: skip
    return AlertService(
        engine,
        notifications,
        settings,
        bus=bus,
        bus_metrics=bus_metrics if bus_metrics is not None else BusMetrics(registry),
        workers=workers,
        worker_metrics=WorkerMetrics(registry) if workers is not None else None,
    )
