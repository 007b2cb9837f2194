"""docs/metrics.md is the reference the code renders, and it lists every metric the
platform registers: no metric goes undocumented."""

from __future__ import annotations

from pathlib import Path

from atrium.app import build_platform
from atrium.core.settings import Settings
from atrium.observability.reference import render_reference

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def test_the_page_is_what_the_code_renders() -> None:
    assert DOC.read_text(encoding="utf-8") == render_reference(), (
        "docs/metrics.md is out of date: python -m atrium.observability.reference > docs/metrics.md"
    )


def test_every_metric_the_platform_registers_is_in_the_reference(tmp_path: Path) -> None:
    # PostgreSQL (never connected to: the platform is built, not started) brings the
    # worker monitor, a rule brings the alert service: every metric set is registered.
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "store": {"url": "postgresql+asyncpg://postgres@127.0.0.1:5432/never_opened"},
            "alerts": {"rules": [{"name": "r", "kind": "gauge", "metric": "m"}]},
        }
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    assert platform.alerts is not None
    assert platform.worker_monitor is not None
    exposed = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in platform.metrics.registry.collect()
    }
    text = render_reference()
    missing = sorted(name for name in exposed if f"| `{name}` |" not in text)
    assert not missing, f"metrics missing from the reference: {missing}"
    assert {
        "atrium_bus_consumer_lag",
        "atrium_workflow_runs_total",
        "atrium_rag_retrieval_duration_seconds",
        "atrium_alert_notifications_total",
    } <= exposed


def test_a_metric_is_listed_with_its_type_and_labels() -> None:
    text = render_reference()
    assert (
        "| `atrium_rag_retrieval_duration_seconds` | histogram | `knowledge_base`, `mode` |" in text
    )
    assert "| `atrium_bus_dead_letters` | gauge | none |" in text
