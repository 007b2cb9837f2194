"""The chunk index protocol: dense and lexical search over one knowledge base's chunks.

Two implementations run the same test suite (tests/integration/rag/test_index_suite.py):
the embedded default (:mod:`atrium.rag.index.lance`, LanceDB on disk) and the production
backend (:mod:`atrium.rag.index.pgvector`, PostgreSQL with pgvector and full-text search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from atrium.rag.types import ChunkRecord, FieldType, Hit, SearchScope


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """The shape of one knowledge base's index: vector size and declared metadata fields."""

    name: str
    dimensions: int
    fields: dict[str, FieldType] = field(default_factory=dict)


class ChunkIndex(Protocol):
    """Stores chunks with their vectors and metadata; searches them densely and lexically.

    Writes are per document and atomic: after :meth:`replace_documents` returns, a search
    sees either every chunk of a document's new version or (before it) every chunk of the
    old one, never a mix and never a part. Searches apply the :class:`SearchScope` inside
    the index query.
    """

    async def create(self, spec: CollectionSpec) -> None:
        """Create the collection; a no-op when it exists with the same spec."""
        ...

    async def drop(self, name: str) -> None:
        """Remove the collection and every chunk in it; a no-op when it does not exist."""
        ...

    async def replace_documents(
        self, name: str, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]
    ) -> None:
        """Atomically replace all chunks of ``document_ids`` with ``chunks``.

        Every chunk's ``document_id`` must be in ``document_ids``. A document id with no
        chunks in ``chunks`` is deleted.
        """
        ...

    async def delete_source(self, name: str, source_id: str) -> int:
        """Delete every chunk of a source; returns how many were deleted."""
        ...

    async def dense(
        self, name: str, vector: npt.NDArray[np.float32], k: int, scope: SearchScope
    ) -> list[Hit]:
        """The ``k`` chunks nearest to ``vector`` (cosine similarity as the score)."""
        ...

    async def lexical(self, name: str, query: str, k: int, scope: SearchScope) -> list[Hit]:
        """The ``k`` best chunks for ``query`` by the index's lexical ranking."""
        ...

    async def get(self, name: str, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """The chunks with these ids that exist, in no particular order."""
        ...

    async def count(self, name: str) -> int:
        """How many chunks the collection holds."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
