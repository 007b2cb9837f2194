"""Chunk indexes: the :class:`ChunkIndex` protocol and its two backends.

:class:`LanceChunkIndex` (embedded, on local disk) and :class:`PgVectorChunkIndex`
(PostgreSQL with pgvector) pass the same test suite; both reject unknown filter fields
and values of the wrong type with :class:`ValueError`, and raise
:class:`CollectionNotFoundError` for a collection that does not exist.
"""

from atrium.rag.index._filters import CollectionNotFoundError
from atrium.rag.index.base import ChunkIndex, CollectionSpec
from atrium.rag.index.lance import LanceChunkIndex
from atrium.rag.index.pgvector import PgVectorChunkIndex

__all__ = [
    "ChunkIndex",
    "CollectionNotFoundError",
    "CollectionSpec",
    "LanceChunkIndex",
    "PgVectorChunkIndex",
]
