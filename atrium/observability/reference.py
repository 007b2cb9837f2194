"""The metrics reference: every Prometheus metric Atrium registers, with its type, labels
and help text, rendered from the metric classes themselves.

``docs/metrics.md`` is this module's output (``python -m atrium.observability.reference >
docs/metrics.md``); a unit test fails when the two differ, and another when the platform
registers a metric this reference does not list.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from atrium.observability.alerts import AlertMetrics
from atrium.observability.metrics import (
    BudgetMetrics,
    BusMetrics,
    GatewayMetrics,
    RagMetrics,
    ReleaseMetrics,
    WorkerMetrics,
    WorkflowMetrics,
)

_HEADER = """# Metrics reference

Every Prometheus metric Atrium serves at `GET /metrics` (an admin key is needed unless
`server.public_metrics` is on): its name as exposed, its type, its labels and what it
counts. A counter is exposed with the suffix `_total`; a histogram as `<name>_bucket`
(with the label `le`), `<name>_sum` and `<name>_count`. Labels carry names (models,
routes, knowledge bases, workflows, block types, topics, groups) and outcomes, never key
material, prompts or documents.

Generated from the code by `python -m atrium.observability.reference > docs/metrics.md`;
`tests/unit/observability/test_metrics_reference.py` fails when this page and the code
differ.
"""


def _gateway(_: CollectorRegistry) -> GatewayMetrics:
    return GatewayMetrics()  # owns the platform's registry; the others register on it


#: Each metric set as the platform builds it, in the order the page lists them.
METRIC_SETS: tuple[tuple[type, Callable[[CollectorRegistry], object]], ...] = (
    (GatewayMetrics, _gateway),
    (BudgetMetrics, BudgetMetrics),
    (ReleaseMetrics, ReleaseMetrics),
    (RagMetrics, RagMetrics),
    (WorkflowMetrics, WorkflowMetrics),
    (WorkerMetrics, WorkerMetrics),
    (BusMetrics, BusMetrics),
    (AlertMetrics, AlertMetrics),
)


@dataclass(frozen=True, slots=True)
class MetricDoc:
    """One metric as the reference lists it."""

    name: str  # as exposed (a counter with ``_total``)
    kind: str  # counter, gauge, histogram, summary
    labels: tuple[str, ...]
    help: str


def documented(metric: MetricWrapperBase) -> MetricDoc:
    """A metric object's name, type, labels and help."""
    # prometheus_client keeps the label names on the metric object only (a family that
    # ``collect`` yields has none until a series exists).
    kind, name = metric._type or "untyped", metric._name
    exposed = f"{name}_total" if kind == "counter" else name
    return MetricDoc(exposed, kind, tuple(metric._labelnames), metric._documentation)


def metric_docs(metric_set: object) -> Iterator[MetricDoc]:
    """The metrics one metric set (``GatewayMetrics``, ``BusMetrics``, ...) defines."""
    for value in vars(metric_set).values():
        if isinstance(value, MetricWrapperBase):
            yield documented(value)


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split())


def render_reference() -> str:
    """The reference as Markdown: one section per metric set, metrics in definition order."""
    registry = CollectorRegistry()
    lines = [_HEADER]
    for cls, build in METRIC_SETS:
        metric_set = build(registry)
        lines += [
            f"## {cls.__name__}",
            "",
            _summary(cls),
            "",
            f"Defined by `{cls.__module__}.{cls.__qualname__}`.",
            "",
            "| metric | type | labels | help |",
            "|---|---|---|---|",
        ]
        for doc in metric_docs(metric_set):
            labels = ", ".join(f"`{label}`" for label in doc.labels) or "none"
            text = doc.help.replace("|", "\\|")
            lines.append(f"| `{doc.name}` | {doc.kind} | {labels} | {text} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_reference())
