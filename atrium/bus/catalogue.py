"""The event catalogue: every event type's topic, version, publisher and fields.

``docs/events.md`` is this module's output (``python -m atrium.bus.catalogue >
docs/events.md``); a unit test fails when the two differ, so a new or changed event
type cannot go undocumented.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo

from atrium.bus.base import Event
from atrium.bus.events import EVENT_TYPES

_HEADER = """# Event catalogue

Every event on Atrium's bus (`atrium.bus.events.EVENT_TYPES`): its topic (`type`), its
schema `version` (bumped on an incompatible change; a consumer reads older versions
and dead-letters newer ones), the module that publishes it, and its fields. Every
event also carries `id` (a unique hex id, the deduplication key) and `occurred_at`
(UTC). On Redis Streams each topic is the stream `<bus.stream_prefix><type>`.

Generated from the code by `python -m atrium.bus.catalogue > docs/events.md`;
`tests/unit/bus/test_catalogue.py` fails when this page and the code differ.
"""


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is not None and args:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(arg) for arg in args)}]"
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "generated"
    return f"`{field.default!r}`"


def _summary(event_type: type[Event]) -> str:
    doc = inspect.getdoc(event_type) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _section(event_type: type[Event]) -> list[str]:
    lines = [
        f"## `{event_type.type}`",
        "",
        _summary(event_type),
        "",
        f"- class: `{event_type.__module__}.{event_type.__qualname__}`",
        f"- version: {event_type.version}",
        f"- publisher: {event_type.publisher or 'unknown'}",
        "",
        "| field | type | default |",
        "|---|---|---|",
    ]
    base = set(Event.model_fields)
    for name, field in event_type.model_fields.items():
        if name not in base:
            lines.append(f"| `{name}` | `{_type_name(field.annotation)}` | {_default(field)} |")
    return [*lines, ""]


def render_catalogue(event_types: Mapping[str, type[Event]] = EVENT_TYPES) -> str:
    """The catalogue as Markdown, event types in topic order."""
    lines = [_HEADER]
    lines += ["| type | version | publisher |", "|---|---|---|"]
    for name in sorted(event_types):
        event_type = event_types[name]
        lines.append(f"| [`{name}`](#{name.replace('.', '')}) | {event_type.version} | "
                     f"{event_type.publisher or 'unknown'} |")  # fmt: skip
    lines.append("")
    for name in sorted(event_types):
        lines += _section(event_types[name])
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_catalogue())
