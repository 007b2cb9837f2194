"""Settings of tracing, logging and alerting (wired into the tree by ``core/settings.py``).

Plain pydantic models with no imports from the rest of Atrium, so the settings
module can import them without a cycle.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class TracingSettings(BaseModel):
    """OpenTelemetry tracing: off by default (then no span object is ever created)."""

    enabled: bool = Field(False, description="Trace requests, retrieval and workflow runs.")
    service_name: str = Field("atrium", description="The service.name resource attribute.")
    sampling_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded (a caller's sampled traceparent is honoured).",
    )
    otlp_endpoint: str | None = Field(
        None,
        description=(
            "OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; "
            "unset: spans are made (ids in logs and headers) but exported nowhere."
        ),
    )
    otlp_headers: dict[str, str] = Field(
        default_factory=dict, description="Headers sent to the collector (e.g. an auth token)."
    )


class LoggingSettings(BaseModel):
    """Atrium's log lines."""

    format: Literal["text", "json"] = Field(
        "text", description="text (human lines) or json (one JSON object a line)."
    )


Comparison = Literal[">", ">=", "<", "<="]


class AlertRule(BaseModel):
    """One alerting rule over the platform's own metrics or over bus events.

    ``kind`` says what ``value`` is: ``error_rate`` (share of ``atrium_requests`` with
    a 5xx status over ``window_seconds``), ``latency_quantile`` (``quantile`` of a
    histogram over the window), ``increase`` (growth of a counter or gauge over the
    window), ``gauge`` (a value now, summed over matching series), ``event`` (events
    of ``event`` matching ``match`` seen in the window, or the sum of their numeric
    field ``sum_field``), ``burn_rate`` (how fast an SLO's error budget burns, the
    lower of the rates over ``window_seconds`` and ``short_window_seconds``: the
    multi-window burn rate of the Google SRE workbook; bad requests are 5xx ones for
    ``sli: errors``, ones slower than ``latency_seconds`` for ``sli: latency``),
    ``budget`` (the highest share of its USD budget a key or team has spent this
    period, ``atrium_budget_spent_ratio``) or ``workers_missing`` (how many pools of
    ``metric``, by default the bus consumer groups' ``atrium_bus_consumers_live``, have
    fewer than ``min_live`` live members). The alert fires when ``value <op> threshold``
    has held for ``for_seconds``.
    """

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    kind: Literal[
        "error_rate",
        "latency_quantile",
        "increase",
        "gauge",
        "event",
        "burn_rate",
        "budget",
        "workers_missing",
    ]
    metric: str | None = Field(
        None, description="Metric name (histogram or sample name) for the metric kinds."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Only series with these label values count."
    )
    event: str | None = Field(
        None,
        description="Event type for kind event, e.g. alert.fired (the alerts services raise, "
        "such as a rolled-back release; the alert.fired of alert rules never counts).",
    )
    match: dict[str, str] = Field(
        default_factory=dict, description="Event fields that must equal these (kind event)."
    )
    sum_field: str | None = Field(
        None, description="Kind event: sum this numeric event field instead of counting events."
    )
    quantile: float = Field(0.95, gt=0.0, lt=1.0)
    window_seconds: float = Field(300.0, gt=0.0)
    slo: float = Field(
        0.999, gt=0.0, lt=1.0, description="Kind burn_rate: the objective (share of good requests)."
    )
    sli: Literal["errors", "latency"] = Field(
        "errors", description="Kind burn_rate: bad means a 5xx status, or slower than latency."
    )
    latency_seconds: float = Field(
        1.0, gt=0.0, description="Kind burn_rate, sli latency: a request slower than this is bad."
    )
    short_window_seconds: float | None = Field(
        None, gt=0.0, description="Kind burn_rate: the short window (default window / 12)."
    )
    min_live: int = Field(1, ge=1, description="Kind workers_missing: live members a pool needs.")
    op: Comparison = ">"
    threshold: float = 0.0
    for_seconds: float = Field(0.0, ge=0.0, description="How long the condition must hold.")
    severity: Literal["info", "warning", "critical"] = "warning"
    summary: str = Field("", max_length=1000, description="What a notification says.")
    notify: list[str] = Field(
        default_factory=list, description="Notifier names; empty: every notifier."
    )

    @model_validator(mode="after")
    def _complete(self) -> AlertRule:
        if self.kind == "event" and not self.event:
            raise ValueError(f"alert rule {self.name!r}: kind event needs 'event'")
        if self.kind == "event" and self.event == "alert.resolved":
            # Only alert rules publish it, and their events never feed rules (no loops).
            msg = f"alert rule {self.name!r}: alert.resolved events never count for rules"
            raise ValueError(msg)
        if self.kind in ("latency_quantile", "increase", "gauge") and not self.metric:
            raise ValueError(f"alert rule {self.name!r}: kind {self.kind} needs 'metric'")
        short = self.short_window_seconds
        if short is not None and short >= self.window_seconds:
            raise ValueError(f"alert rule {self.name!r}: short_window_seconds must be < window")
        return self

    @property
    def short_window(self) -> float:
        """The burn rate's short window: as set, or a twelfth of the long one (5 m of 1 h)."""
        return self.short_window_seconds or self.window_seconds / 12


class NotifierSettings(BaseModel):
    """Where alert notifications go: a generic webhook, a Slack-compatible one, or e-mail."""

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["webhook", "slack", "email"]
    url: str | None = Field(None, description="The webhook URL (webhook and slack).")
    to: list[str] = Field(default_factory=list, description="Recipients (email).")

    @model_validator(mode="after")
    def _complete(self) -> NotifierSettings:
        if self.kind in ("webhook", "slack") and not self.url:
            raise ValueError(f"notifier {self.name!r}: kind {self.kind} needs 'url'")
        if self.kind == "email" and not self.to:
            raise ValueError(f"notifier {self.name!r}: kind email needs 'to'")
        return self


class AlertSettings(BaseModel):
    """Alert rules, their evaluation and the notifiers."""

    enabled: bool = Field(True, description="Evaluate the rules (nothing runs without rules).")
    interval_seconds: float = Field(15.0, gt=0.0, description="Time between evaluations.")
    rules: list[AlertRule] = Field(default_factory=list)
    notifiers: list[NotifierSettings] = Field(default_factory=list)
    attempts: int = Field(4, ge=1, le=20, description="Tries per notification before failing.")
    retry_backoff_seconds: float = Field(1.0, ge=0.0, description="First retry delay (doubles).")
    timeout_seconds: float = Field(10.0, gt=0.0, description="Per-try timeout of a notification.")
    history: int = Field(200, ge=1, description="Resolved alerts and deliveries kept for the API.")
    redis_prefix: str = Field(
        "atrium:alerts:", min_length=1,
        description="Redis key prefix of the claims that notify each alert once per fleet.",
    )  # fmt: skip
    claim_ttl_seconds: float | None = Field(
        None, gt=0.0,
        description="How long a firing replica's claim outlives its last evaluation: a "
        "replica silent this long is gone, and a live one sends the resolve of the alerts "
        "it alone fired (default: 4 intervals, at least 30 s).",
    )  # fmt: skip
    allow_private_networks: bool = Field(
        False, description="Let webhooks reach private addresses (an in-house receiver)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts or networks webhooks may reach even if private."
    )

    @model_validator(mode="after")
    def _unique(self) -> AlertSettings:
        for what, names in (
            ("rule", [r.name for r in self.rules]),
            ("notifier", [n.name for n in self.notifiers]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"alert {what} names must be unique")
        known = {n.name for n in self.notifiers}
        for rule in self.rules:
            unknown = set(rule.notify) - known
            if unknown:
                raise ValueError(f"alert rule {rule.name!r} names unknown notifiers {unknown}")
        ttl = self.claim_ttl_seconds
        if ttl is not None and ttl < 2 * self.interval_seconds:
            # A replica renews its claims once an interval: a shorter TTL lapses between
            # two evaluations, and the others would resolve alerts it still fires.
            raise ValueError("alerts.claim_ttl_seconds must be at least 2 intervals")
        return self
