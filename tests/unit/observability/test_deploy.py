"""The Grafana dashboard and the PrometheusRule in deploy/ parse and name only real
metrics, with only the labels those metrics carry; every metric set has a panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from atrium.bus import replica_group
from atrium.bus.base import REPLICA_GROUP
from atrium.observability.reference import METRIC_SETS, metric_docs

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
_METRIC = re.compile(r"\b((?:atrium|gen_ai)_[a-z0-9_]+)")
# A metric and its matchers ({...}, whose quoted values may hold braces: {8} in a regex).
_SELECTOR = re.compile(
    r'\b((?:atrium|gen_ai)_[a-z0-9_]+)\s*(?:\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\})?'
)
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
_GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")  # (no rule or panel uses without)
_LEGEND = re.compile(r"\{\{\s*(?:\$labels\.)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


@dataclass(frozen=True, slots=True)
class Target:
    """One expression and the text that names its labels (a legend, a rule's summary)."""

    where: str
    expr: str
    legend: str


def _exposed() -> dict[str, frozenset[str]]:
    """Every sample name Atrium exposes, with its labels (as docs/metrics.md lists them)."""
    samples: dict[str, frozenset[str]] = {}
    registry = CollectorRegistry()
    for _, build in METRIC_SETS:
        for doc in metric_docs(build(registry)):
            labels = frozenset(doc.labels)
            if doc.kind == "histogram":
                samples[f"{doc.name}_bucket"] = labels | {"le"}
                samples[f"{doc.name}_sum"] = samples[f"{doc.name}_count"] = labels
            else:
                samples[doc.name] = labels
    return samples


EXPOSED = _exposed()


def problems(target: Target, exposed: dict[str, frozenset[str]] = EXPOSED) -> list[str]:
    """What in ``target`` names a metric or a label Atrium does not expose."""
    found: list[str] = []
    carried: set[str] = set()
    for name, matchers in _SELECTOR.findall(target.expr):
        if name not in exposed:
            found.append(f"{target.where}: unknown metric {name}")
            continue
        carried |= exposed[name]
        for label in _MATCHER.findall(matchers):
            if label not in exposed[name]:
                found.append(f"{target.where}: {name} has no label {label}")
    groupings = [
        {label.strip() for label in group.split(",") if label.strip()}
        for group in _GROUPING.findall(target.expr)
    ]
    for grouping in groupings:
        found += [f"{target.where}: no metric of it has the label {label}"
                  for label in sorted(grouping - carried)]  # fmt: skip
    # What the result carries: the labels every aggregation keeps (all, with none).
    result = set.intersection(*groupings) if groupings else carried
    found += [f"{target.where}: its result has no label {label} to show"
              for label in sorted(set(_LEGEND.findall(target.legend)) - result)]  # fmt: skip
    return found


def _rules() -> list[dict[str, object]]:
    document = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    assert document["kind"] == "PrometheusRule"
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def _rule_targets() -> Iterator[Target]:
    for rule in _rules():
        annotations = rule.get("annotations", {})
        assert isinstance(annotations, dict)
        yield Target(str(rule["alert"]), str(rule["expr"]), " ".join(annotations.values()))


def _dashboard_targets() -> Iterator[Target]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "atrium-overview"
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):  # a row has none
            yield Target(f"{panel['title']} {target['refId']}", target["expr"],
                         target.get("legendFormat", ""))  # fmt: skip


def _exprs(targets: Iterator[Target]) -> str:
    return " ".join(target.expr for target in targets)


def test_every_metric_and_label_the_rules_and_dashboard_name_exists() -> None:
    targets = [*_rule_targets(), *_dashboard_targets()]
    named = {name for target in targets for name in _METRIC.findall(target.expr)}
    assert len(named) > 20, "hardly a metric found in deploy/"
    assert [p for target in targets for p in problems(target)] == []


def test_the_rules_watch_each_service() -> None:
    assert {
        "AtriumHighErrorRate",
        "AtriumHighLatencyP95",
        "AtriumDeadLettersGrowing",
        "AtriumBusGroupWithoutConsumers",
        "AtriumWorkflowWorkersMissing",
        "AtriumBudgetExhausted",
        "AtriumIngestionFailures",
        "AtriumSlowRetrieval",
        "AtriumWorkflowFailureRate",
    } <= {rule["alert"] for rule in _rules()}
    rules = _exprs(_rule_targets())
    for metric in (
        "atrium_rag_documents_failed_total",
        "atrium_rag_retrieval_duration_seconds_bucket",
        "atrium_workflow_runs_total",
        "atrium_bus_dead_letters",
        "atrium_releases_total",
    ):
        assert metric in rules, metric


def test_every_metric_set_has_a_panel() -> None:
    panels = _exprs(_dashboard_targets())
    registry = CollectorRegistry()
    for cls, build in METRIC_SETS:
        names = [doc.name for doc in metric_docs(build(registry))]
        assert any(name in panels for name in names), f"no panel shows {cls.__name__}"
    for metric in (
        "atrium_rag_queries_total",
        "atrium_rag_retrieval_duration_seconds_bucket",
        "atrium_rag_documents_indexed_total",
        "atrium_rag_documents_failed_total",
        "atrium_workflow_runs_total",
        "atrium_workflow_run_duration_seconds_bucket",
        "atrium_workflow_block_duration_seconds_bucket",
        "atrium_bus_consumer_lag",
        "atrium_bus_pending",
        "atrium_bus_dead_letters",
        "atrium_releases_total",
        "atrium_release_canary_weight_percent",
    ):
        assert metric in panels, metric


def test_budgets_and_live_workers_are_watched_and_shown() -> None:
    rules = _exprs(_rule_targets())
    panels = _exprs(_dashboard_targets())
    for metric in (
        "atrium_budget_spent_ratio",
        "atrium_bus_consumers_live",
        "atrium_workflow_workers_live",
    ):
        assert metric in rules, metric
        assert metric in panels, metric


def test_per_replica_groups_are_not_taken_for_missing_consumers() -> None:
    """The alert skips the groups each replica holds alone (route, key changes; canary arms)."""
    [expr] = [t.expr for t in _rule_targets() if "atrium_bus_consumers_live" in t.expr]
    pattern = re.search(r'group!~"([^"]+)"', expr)
    assert pattern is not None
    assert pattern.group(1) == REPLICA_GROUP.pattern  # the alert service skips the same
    skipped = re.compile(pattern.group(1))
    assert skipped.fullmatch(replica_group("routes"))
    assert skipped.fullmatch(replica_group("keys"))
    assert skipped.fullmatch(replica_group("arms"))
    for shared in ("audit", "usage", "alerts", "releases", "triggers"):
        assert not skipped.fullmatch(shared)


@pytest.mark.parametrize(
    ("expr", "legend", "problem"),
    [
        ("rate(atrium_requests_totals[5m])", "", "unknown metric atrium_requests_totals"),
        ("atrium_rag_documents_failed", "", "unknown metric atrium_rag_documents_failed"),
        ('rate(atrium_requests_total{stauts="500"}[5m])', "", "has no label stauts"),
        ("sum by (modell) (rate(atrium_requests_total[5m]))", "", "the label modell"),
        ("sum by (model) (rate(atrium_requests_total[5m]))", "{{endpoint}}", "no label endpoint"),
        ("atrium_bus_dead_letters", "{{ $labels.topic }}", "no label topic"),
        ("sum by (le) (rate(atrium_workflow_runs_total[5m]))", "", "the label le"),  # no buckets
    ],
)
def test_an_unknown_metric_or_label_is_caught(expr: str, legend: str, problem: str) -> None:
    [found] = problems(Target("t", expr, legend))
    assert problem in found


def test_what_exists_passes() -> None:
    for expr, legend in (
        ('sum by (model) (rate(atrium_requests_total{status=~"5.."}[5m]))', "{{model}}"),
        ("histogram_quantile(0.95, sum by (knowledge_base, le) "
         "(rate(atrium_rag_retrieval_duration_seconds_bucket[5m])))", "{{knowledge_base}}"),
        ('max by (topic, group) (atrium_bus_consumers_live{group!~"[a-z]+-[0-9a-f]{8}"})',
         "{{topic}}/{{group}}"),
        ("increase(atrium_releases_total[15m]) > 0", "{{ $labels.model }}"),
    ):  # fmt: skip
        assert problems(Target("t", expr, legend)) == []
