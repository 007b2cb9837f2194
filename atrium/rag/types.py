"""The RAG engine's shared value types: documents, chunks, filters and search hits.

Every stage of the pipeline (connectors -> parsers -> chunkers -> embedder -> index ->
retriever) speaks these types, so a stage can be replaced without touching the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

#: A metadata value a chunk may carry and a filter may compare against.
Scalar = str | int | float | bool | datetime

#: Types a knowledge base may declare for its filterable metadata fields.
FieldType = Literal["string", "int", "float", "bool", "datetime"]

#: Metadata every chunk has, filterable in every knowledge base without a declaration.
BUILTIN_FIELDS: dict[str, FieldType] = {
    "source_id": "string",
    "document_id": "string",
    "doc_type": "string",
    "title": "string",
    "section": "string",
    "page": "int",
    "created_at": "datetime",
    "updated_at": "datetime",
}


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One document as a connector found it, before parsing.

    ``key`` identifies the document within its source (a relative path, a row's primary
    key, an API item id) and stays the same across syncs, so a changed document replaces
    its earlier version. ``content_hash`` is a hash of ``data`` (SHA-256 hex): a document
    whose hash has not changed since the last sync is skipped.
    """

    key: str
    data: bytes
    filename: str
    content_hash: str
    media_type: str | None = None
    title: str | None = None
    uri: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    metadata: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Section:
    """A run of parsed text under one heading path (``"Results > Table 2"``) on one page."""

    text: str
    heading: str | None = None
    page: int | None = None
    #: ``"text"`` for prose, ``"table"`` for a table rendered one row per line with a header.
    kind: Literal["text", "table"] = "text"


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A document's text, split by the parser into sections in reading order."""

    sections: list[Section]
    doc_type: str
    title: str | None = None

    @property
    def text(self) -> str:
        """All sections' text joined by blank lines."""
        return "\n\n".join(section.text for section in self.sections)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document to embed and index.

    ``text`` is what is matched (embedded and indexed for lexical search); ``context`` is
    what a retriever returns to the model: the parent passage for parent-child chunking,
    otherwise ``text`` itself.
    """

    ordinal: int
    text: str
    context: str
    section: str | None = None
    page: int | None = None
    token_count: int = 0


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A chunk with everything an index stores about it."""

    chunk_id: str
    document_id: str
    source_id: str
    ordinal: int
    text: str
    context: str
    title: str
    doc_type: str
    vector: npt.NDArray[np.float32]
    section: str | None = None
    page: int | None = None
    uri: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    access_groups: tuple[str, ...] = ()
    metadata: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk found by a search, with the score the search gave it (higher is better)."""

    record: ChunkRecord
    score: float


class Op(StrEnum):
    """Comparison operators of a metadata filter."""

    EQ = "$eq"
    NE = "$ne"
    IN = "$in"
    NIN = "$nin"
    GT = "$gt"
    GTE = "$gte"
    LT = "$lt"
    LTE = "$lte"


@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value``; for ``$in``/``$nin`` the value is a tuple of scalars."""

    field: str
    op: Op
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class SearchScope:
    """What a search may see: conditions ANDed together, and the caller's access groups.

    ``groups=None`` means an administrator: every chunk is visible. Otherwise a chunk is
    visible when it has no access groups or shares one with ``groups``. Indexes apply
    both inside the query itself, never by dropping results afterwards.
    """

    conditions: tuple[Condition, ...] = ()
    groups: frozenset[str] | None = None
