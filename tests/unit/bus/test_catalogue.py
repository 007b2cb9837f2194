"""docs/events.md is the catalogue the code renders: no event type goes undocumented."""

from __future__ import annotations

from pathlib import Path

from atrium.bus.catalogue import render_catalogue
from atrium.bus.events import EVENT_TYPES

DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"


def test_every_event_type_is_documented_with_its_version_and_publisher() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name, event_type in EVENT_TYPES.items():
        assert f"## `{name}`" in text, f"{name} is missing from docs/events.md"
        assert event_type.publisher, f"{event_type.__name__} names no publisher"
        section = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        assert f"- version: {event_type.version}" in section
        for field in set(event_type.model_fields) - {"id", "occurred_at"}:
            assert f"| `{field}` |" in section, f"{name}.{field} is missing from docs/events.md"


def test_the_page_is_what_the_code_renders() -> None:
    assert DOC.read_text(encoding="utf-8") == render_catalogue(), (
        "docs/events.md is out of date: python -m atrium.bus.catalogue > docs/events.md"
    )


def test_a_missing_event_type_is_caught() -> None:
    fewer = {k: v for k, v in EVENT_TYPES.items() if k != "request.completed"}
    assert "## `request.completed`" not in render_catalogue(fewer)
    assert render_catalogue(fewer) != DOC.read_text(encoding="utf-8")
