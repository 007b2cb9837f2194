"""Rules both chunk indexes share: names, scope validation, and how rows are checked.

A :class:`~atrium.rag.types.SearchScope` arrives from an API request, so every field and
value in it is checked here before a backend turns it into its own query language: an
unknown field or a value of the wrong type raises :class:`ValueError` naming the field
(the API answers 400). Backends then render :class:`TypedCondition` objects, never the
raw scope.

Semantics shared by both backends, so the same test suite holds on both:

- ``$ne`` and ``$nin`` also match chunks where the field is missing (NULL), as in
  MongoDB; every other operator needs the field to be present.
- ``$in`` with an empty tuple matches nothing; ``$nin`` with an empty tuple matches all.
- ``$gt``/``$gte``/``$lt``/``$lte`` are not defined on ``bool`` fields.
- Datetimes must be timezone-aware; they are compared in UTC.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from atrium.rag.index.base import CollectionSpec
from atrium.rag.types import (
    BUILTIN_FIELDS,
    ChunkRecord,
    Condition,
    FieldType,
    Op,
    Scalar,
    SearchScope,
)

#: Collection names come from knowledge-base ids (``kb_01HX...``); they become table names.
_COLLECTION_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,40}")
#: Declared field names become column names (``m_<name>``), so they must be identifiers.
_FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,55}")
_FIELD_TYPES: Final = frozenset({"string", "int", "float", "bool", "datetime"})
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_ORDERING_OPS: Final = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})
_SET_OPS: Final = frozenset({Op.IN, Op.NIN})
_MAX_DIMENSIONS: Final = 16_000
#: Tag that marks a datetime inside the JSON a record's metadata is stored as.
_DATETIME_TAG: Final = "$datetime"


class CollectionNotFoundError(LookupError):
    """The named collection does not exist in the index."""

    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name


@dataclass(frozen=True, slots=True)
class TypedCondition:
    """A checked condition: the column it applies to, its type and normalised values.

    ``values`` holds one value for the comparison operators and any number for
    ``$in``/``$nin``; datetimes are in UTC, ints given for float fields are floats.
    """

    field: str
    column: str
    kind: FieldType
    op: Op
    values: tuple[Scalar, ...]


def check_collection_name(name: str) -> str:
    """``name`` itself when it is a valid collection name, else :class:`ValueError`."""
    if not isinstance(name, str) or _COLLECTION_NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid collection name {name!r}: use 1 to 40 letters, digits, '_' or '-'"
        )
    return name


def check_spec(spec: CollectionSpec) -> None:
    """Raise :class:`ValueError` when a collection spec cannot be stored."""
    check_collection_name(spec.name)
    if isinstance(spec.dimensions, bool) or not 0 < spec.dimensions <= _MAX_DIMENSIONS:
        raise ValueError(f"dimensions must be between 1 and {_MAX_DIMENSIONS}")
    for name, kind in spec.fields.items():
        if name in BUILTIN_FIELDS:
            raise ValueError(f"field {name!r} is built in and cannot be declared")
        if _FIELD_NAME.fullmatch(name) is None:
            raise ValueError(f"invalid field name {name!r}: use letters, digits and '_'")
        if kind not in _FIELD_TYPES:
            raise ValueError(f"field {name!r} has unknown type {kind!r}")


def column_of(field: str) -> str:
    """The column a field is stored in: built-in fields as themselves, declared ones prefixed.

    The prefix keeps declared fields apart from built-in and internal columns.
    """
    return field if field in BUILTIN_FIELDS else f"m_{field}"


def field_of(column: str) -> str | None:
    """The declared field stored in ``column``, or None for any other column."""
    return column[2:] if column.startswith("m_") else None


def resolve_scope(
    scope: SearchScope, declared: Mapping[str, FieldType]
) -> tuple[list[TypedCondition], frozenset[str] | None]:
    """Check every condition against the collection's fields; return them typed, and groups."""
    conditions = [_resolve(condition, declared) for condition in scope.conditions]
    groups = scope.groups
    if groups is not None:
        for group in groups:
            coerce_value("groups", "string", group)
    return conditions, groups


def _resolve(condition: Condition, declared: Mapping[str, FieldType]) -> TypedCondition:
    name = condition.field
    kind = BUILTIN_FIELDS.get(name) or declared.get(name)
    if kind is None:
        raise ValueError(f"field {name!r} is not a filterable field of this knowledge base")
    try:
        op = Op(condition.op)
    except ValueError:
        raise ValueError(f"field {name!r}: unknown operator {condition.op!r}") from None
    if kind == "bool" and op in _ORDERING_OPS:
        raise ValueError(f"field {name!r}: {op.value} is not defined on bool fields")
    if op in _SET_OPS:
        if not isinstance(condition.value, tuple | list | frozenset | set):
            raise ValueError(f"field {name!r}: {op.value} needs a list of values")
        raw: Sequence[Any] = list(condition.value)
    else:
        if isinstance(condition.value, tuple | list | frozenset | set):
            raise ValueError(f"field {name!r}: {op.value} needs a single value")
        raw = [condition.value]
    values = tuple(coerce_value(name, kind, value) for value in raw)
    return TypedCondition(name, column_of(name), kind, op, values)


def coerce_value(field: str, kind: FieldType, value: object) -> Scalar:
    """``value`` checked against the field's type and normalised; else :class:`ValueError`."""
    if kind == "string" and isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"field {field!r}: strings may not contain NUL characters")
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"field {field!r}: {value} is out of the 64-bit integer range")
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"field {field!r}: {value} is not a finite number")
        return number
    if kind == "datetime" and isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"field {field!r}: datetimes must be timezone-aware")
        return value.astimezone(UTC)
    raise ValueError(f"field {field!r} is a {kind} field; got {type(value).__name__} {value!r}")


def check_records(
    spec: CollectionSpec, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]
) -> None:
    """Raise :class:`ValueError` when ``chunks`` cannot replace ``document_ids``."""
    wanted = set(document_ids)
    seen: set[str] = set()
    for chunk in chunks:
        if chunk.document_id not in wanted:
            raise ValueError(
                f"chunk {chunk.chunk_id!r} belongs to document {chunk.document_id!r},"
                " which is not among the documents being replaced"
            )
        if chunk.chunk_id in seen:
            raise ValueError(f"chunk id {chunk.chunk_id!r} appears twice")
        seen.add(chunk.chunk_id)
        if np.shape(chunk.vector) != (spec.dimensions,):
            raise ValueError(
                f"chunk {chunk.chunk_id!r}: vector has shape {np.shape(chunk.vector)},"
                f" expected ({spec.dimensions},)"
            )
        if not np.all(np.isfinite(chunk.vector)):
            raise ValueError(f"chunk {chunk.chunk_id!r}: vector has non-finite values")
        for name in ("created_at", "updated_at"):
            coerce_optional(name, "datetime", getattr(chunk, name))
        _check_text(chunk)


def _check_text(chunk: ChunkRecord) -> None:
    # PostgreSQL's text cannot hold NUL; both backends refuse it so they store the same.
    texts = (chunk.chunk_id, chunk.document_id, chunk.source_id, chunk.text, chunk.context)
    optional = (chunk.title, chunk.doc_type, chunk.section, chunk.uri, *chunk.access_groups)
    if any("\x00" in text for text in (*texts, *optional) if text is not None):
        raise ValueError(f"chunk {chunk.chunk_id!r}: text may not contain NUL characters")


def coerce_optional(field: str, kind: FieldType, value: object) -> Scalar | None:
    """Like :func:`coerce_value`, letting None through."""
    return None if value is None else coerce_value(field, kind, value)


def declared_values(
    chunk: ChunkRecord, declared: Mapping[str, FieldType]
) -> dict[str, Scalar | None]:
    """The chunk's value of every declared field, keyed by column; missing ones are None."""
    values: dict[str, Scalar | None] = {}
    for name, kind in declared.items():
        try:
            values[column_of(name)] = coerce_optional(name, kind, chunk.metadata.get(name))
        except ValueError as error:
            raise ValueError(f"chunk {chunk.chunk_id!r}: {error}") from None
    return values


def as_vector(vector: npt.ArrayLike, dimensions: int) -> npt.NDArray[np.float32]:
    """A query vector as float32 of the collection's size; else :class:`ValueError`."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dimensions,):
        raise ValueError(f"field 'vector': shape {array.shape}, expected ({dimensions},)")
    if not np.all(np.isfinite(array)):
        raise ValueError("field 'vector': non-finite values")
    return array


def lexical_query(query: str) -> str:
    """The query with NUL characters (which PostgreSQL refuses) turned into spaces."""
    return query.replace("\x00", " ")


def check_k(k: int) -> None:
    """Raise :class:`ValueError` unless ``k`` is a positive int."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"field 'k': must be a positive integer, got {k!r}")


def metadata_to_json(metadata: Mapping[str, Scalar]) -> dict[str, object]:
    """A record's metadata as JSON-ready values, datetimes tagged to keep them apart."""
    return {key: _encode_scalar(value) for key, value in metadata.items()}


def encode_metadata(metadata: Mapping[str, Scalar]) -> str:
    """A record's metadata as a JSON string (see :func:`metadata_to_json`)."""
    return json.dumps(metadata_to_json(metadata), ensure_ascii=False, separators=(",", ":"))


def decode_metadata(raw: str | Mapping[str, Any] | None) -> dict[str, Scalar]:
    """The inverse of :func:`encode_metadata` (PostgreSQL hands JSONB over already parsed)."""
    if raw is None:
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    return {key: _decode_scalar(value) for key, value in data.items()}


def _encode_scalar(value: Scalar) -> object:
    if isinstance(value, datetime):
        return {_DATETIME_TAG: value.isoformat()}
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"metadata value {value!r} is not a finite number")
    return value


def _decode_scalar(value: object) -> Scalar:
    if isinstance(value, dict):
        return datetime.fromisoformat(str(value[_DATETIME_TAG]))
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"unexpected stored metadata value {value!r}")


def scalar_columns(chunk: ChunkRecord) -> dict[str, Any]:
    """A chunk's plain columns, named as both backends store them."""
    return {
        "chunk_id": chunk.chunk_id,
        "document_id": chunk.document_id,
        "source_id": chunk.source_id,
        "ordinal": chunk.ordinal,
        "text": chunk.text,
        "context": chunk.context,
        "title": chunk.title,
        "doc_type": chunk.doc_type,
        "section": chunk.section,
        "page": chunk.page,
        "uri": chunk.uri,
        "created_at": chunk.created_at,
        "updated_at": chunk.updated_at,
    }
