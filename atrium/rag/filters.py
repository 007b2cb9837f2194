"""Metadata filters: parsed from request JSON, checked against a knowledge base's fields.

The JSON form follows the convention of Pinecone and Chroma: ``{"field": value}`` means
equality, ``{"field": {"$gte": 3, "$lt": 9}}`` applies operators, and several fields
are ANDed. Indexes compile the parsed :class:`Condition` list into their own query
language; :func:`matches` evaluates one in Python for business rules (boosts), which
re-score results rather than decide what a caller may see.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from atrium.rag.types import BUILTIN_FIELDS, ChunkRecord, Condition, FieldType, Op, Scalar

_LIST_OPS = frozenset({Op.IN, Op.NIN})
_ORDER_OPS = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})


class FilterError(ValueError):
    """A filter that names an unknown field, operator, or a value of the wrong type."""


def parse_filter(raw: Mapping[str, Any] | None, fields: Mapping[str, FieldType]) -> list[Condition]:
    """Parse ``raw`` against the builtin fields and the knowledge base's ``fields``."""
    if not raw:
        return []
    if not isinstance(raw, Mapping):
        raise FilterError("filter must be an object of field conditions")
    known = {**BUILTIN_FIELDS, **fields}
    conditions: list[Condition] = []
    for name, spec in raw.items():
        if name not in known:
            msg = f"filter names unknown field {name!r}; known fields: {', '.join(sorted(known))}"
            raise FilterError(msg)
        operators = spec if isinstance(spec, Mapping) else {Op.EQ.value: spec}
        if not operators:
            raise FilterError(f"filter on {name!r} has no operator")
        for op_name, value in operators.items():
            conditions.append(_condition(name, known[name], op_name, value))
    return conditions


def _condition(name: str, kind: FieldType, op_name: str, value: Any) -> Condition:
    try:
        op = Op(op_name)
    except ValueError:
        ops = ", ".join(op.value for op in Op)
        raise FilterError(f"filter on {name!r}: unknown operator {op_name!r} ({ops})") from None
    if op in _LIST_OPS:
        if not isinstance(value, list) or not value:
            raise FilterError(f"filter on {name!r}: {op.value} takes a non-empty list")
        return Condition(name, op, tuple(coerce(name, kind, item) for item in value))
    if op in _ORDER_OPS and kind in ("string", "bool"):
        raise FilterError(f"filter on {name!r}: {op.value} needs a number or a date field")
    return Condition(name, op, coerce(name, kind, value))


def coerce(name: str, kind: FieldType, value: Any) -> Scalar:
    """``value`` as the Python type of a field of type ``kind``; FilterError if it is not one."""
    ok: bool
    if kind == "datetime":
        return _datetime(name, value)
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise FilterError(f"filter on {name!r}: {value!r} is not a {kind}")
    return value  # type: ignore[no-any-return]


def _datetime(name: str, value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise FilterError(f"filter on {name!r}: {value!r} is not an ISO 8601 date") from None
    else:
        raise FilterError(f"filter on {name!r}: {value!r} is not an ISO 8601 date")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def field_value(record: ChunkRecord, name: str) -> Scalar | None:
    """The value of field ``name`` on ``record`` (builtin or custom metadata)."""
    if name in BUILTIN_FIELDS:
        value: Scalar | None = getattr(record, name)
        return value
    return record.metadata.get(name)


def matches(record: ChunkRecord, conditions: list[Condition] | tuple[Condition, ...]) -> bool:
    """Whether ``record`` satisfies every condition.

    A missing value satisfies ``$ne`` and ``$nin`` only.
    """
    return all(_holds(field_value(record, c.field), c) for c in conditions)


_COMPARE: dict[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: operator.eq,
    Op.IN: lambda actual, expected: actual in expected,
    Op.GT: operator.gt,
    Op.GTE: operator.ge,
    Op.LT: operator.lt,
    Op.LTE: operator.le,
}


def _holds(actual: Scalar | None, condition: Condition) -> bool:
    op, expected = condition.op, condition.value
    if op is Op.NE:
        return actual != expected
    if op is Op.NIN:
        return actual not in expected  # type: ignore[operator]
    if actual is None:
        return False
    try:
        return _COMPARE[op](actual, expected)
    except TypeError:
        return False
