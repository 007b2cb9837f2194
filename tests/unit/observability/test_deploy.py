"""The Grafana dashboard and the PrometheusRule in deploy/ parse and name only real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from atrium.bus import replica_group
from atrium.bus.base import REPLICA_GROUP
from atrium.observability.alerts import AlertMetrics
from atrium.observability.metrics import (
    BudgetMetrics,
    BusMetrics,
    GatewayMetrics,
    ReleaseMetrics,
    WorkerMetrics,
)

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
_METRIC = re.compile(r"\b((?:atrium|gen_ai)_[a-z0-9_]+)")


def _exposed_names() -> set[str]:
    """Every sample name Atrium exposes (counters as _total, histograms as _bucket, ...)."""
    gateway = GatewayMetrics()
    registry: CollectorRegistry = gateway.registry
    ReleaseMetrics(registry)
    BusMetrics(registry)
    AlertMetrics(registry)
    BudgetMetrics(registry)
    WorkerMetrics(registry)
    names = set()
    for metric in registry.collect():
        names.add(metric.name)
        kind = metric.type
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(metric.name + s for s in suffixes.get(kind, [""]))
    return names


def _expressions_in_rules() -> list[str]:
    document = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    assert document["kind"] == "PrometheusRule"
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    rules = [rule for group in document["spec"]["groups"] for rule in group["rules"]]
    assert {
        "AtriumHighErrorRate",
        "AtriumHighLatencyP95",
        "AtriumDeadLettersGrowing",
        "AtriumBusGroupWithoutConsumers",
        "AtriumWorkflowWorkersMissing",
        "AtriumBudgetExhausted",
    } <= {rule["alert"] for rule in rules}
    return [rule["expr"] for rule in rules]


def _expressions_in_dashboard() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "atrium-overview"
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_metric_the_rules_and_dashboard_name_exists() -> None:
    exposed = _exposed_names()
    expressions = _expressions_in_rules() + _expressions_in_dashboard()
    named = {name for expr in expressions for name in _METRIC.findall(expr)}
    assert named, "no metric found in deploy/"
    assert named - exposed == set()


def test_budgets_and_live_workers_are_watched_and_shown() -> None:
    rules = " ".join(_expressions_in_rules())
    panels = " ".join(_expressions_in_dashboard())
    for metric in (
        "atrium_budget_spent_ratio",
        "atrium_bus_consumers_live",
        "atrium_workflow_workers_live",
    ):
        assert metric in rules, metric
        assert metric in panels, metric


def test_per_replica_groups_are_not_taken_for_missing_consumers() -> None:
    """The alert skips the groups each replica holds alone (route, key changes; canary arms)."""
    [expr] = [e for e in _expressions_in_rules() if "atrium_bus_consumers_live" in e]
    pattern = re.search(r'group!~"([^"]+)"', expr)
    assert pattern is not None
    assert pattern.group(1) == REPLICA_GROUP.pattern  # the alert service skips the same
    skipped = re.compile(pattern.group(1))
    assert skipped.fullmatch(replica_group("routes"))
    assert skipped.fullmatch(replica_group("keys"))
    assert skipped.fullmatch(replica_group("arms"))
    for shared in ("audit", "usage", "alerts", "releases", "triggers"):
        assert not skipped.fullmatch(shared)


def test_an_unknown_metric_would_be_caught() -> None:
    assert "atrium_requests_totals" not in _exposed_names()
    assert "atrium_requests_total" in _exposed_names()
