"""The embedded chunk index: one LanceDB table per collection, on local disk.

Dense search is exact (a flat scan) until a table holds ``ann_threshold`` rows; then an
IVF index with 8-bit scalar quantisation is trained (IVF_SQ: at 200,000 chunks it
trained in about 25 s on two cores where IVF_HNSW_SQ took 200 s, for similar query
latency; HNSW's incremental delta segments also piled up and slowed every query), and
results are re-ranked on the full vectors so that scores are exact cosine
similarities. Lexical search is Lance's native BM25 full-text index on ``text``
(English stemming and stop words, lower case, ASCII folding). Rows written since the
last upkeep are searched by a flat scan, so every search sees every committed row.

Scopes become a SQL ``WHERE`` clause applied as a prefilter, so a restrictive filter
still yields ``k`` hits. Writes of one collection are serialised inside the process;
each is one Lance commit, and every query reads one committed version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
from lancedb.index import FTS, BTree, IvfSq, LabelList

from atrium.rag.index._filters import (
    CollectionNotFoundError,
    TypedCondition,
    as_vector,
    check_collection_name,
    check_k,
    check_records,
    check_spec,
    column_of,
    declared_values,
    decode_metadata,
    encode_metadata,
    field_of,
    lexical_query,
    resolve_scope,
    scalar_columns,
)
from atrium.rag.index.base import CollectionSpec
from atrium.rag.types import ChunkRecord, FieldType, Hit, Op, Scalar, SearchScope

_log = logging.getLogger(__name__)
_SPEC_KEY: Final = b"atrium.spec"
# Chunks without access groups are stored with this one label instead, so that "visible
# to these groups" is a single array_has_any that the LABEL_LIST index answers (an OR
# with array_length() = 0 scans every row). Real groups cannot contain NUL.
_PUBLIC: Final = "\x00public"
_VECTOR_INDEX: Final = "vector_idx"
_TEXT_INDEX: Final = "text_idx"
_ARROW_TYPES: Final[dict[FieldType, pa.DataType]] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
}
_SQL_OPS: Final = {
    Op.EQ: "=",
    Op.NE: "<>",
    Op.GT: ">",
    Op.GTE: ">=",
    Op.LT: "<",
    Op.LTE: "<=",
}
# Columns with a scalar index: merge_insert joins on chunk_id, replaces and deletes
# select by document and source, and every scoped search filters on access groups.
_SCALAR_INDEXES: Final = (
    ("chunk_id", BTree),
    ("document_id", BTree),
    ("source_id", BTree),
    ("access_groups", LabelList),
)


@dataclass(slots=True)
class _Collection:
    table: lancedb.AsyncTable
    spec: CollectionSpec
    schema: pa.Schema
    #: Rows the vector index was trained on; 0 while there is none (search is exact).
    vector_rows: int
    #: Rows written since the indexes last caught up; searched by a flat scan until then.
    pending_rows: int
    last_write: float = 0.0
    upkeep: asyncio.Task[None] | None = None
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LanceChunkIndex:
    """A :class:`~atrium.rag.index.base.ChunkIndex` on LanceDB tables under ``path``.

    Upkeep (``optimize()``: compaction, new rows folded into every index) runs when
    ``reindex_after_rows`` rows were written or deleted since the last one, inside the
    write that crossed it, and otherwise in the background once the collection has had
    no write for ``reindex_idle_s`` seconds: rows outside the full-text index cost
    every lexical query a flat scan (about 50 us a row), so they must not linger.

    ``ann_threshold``: rows at which a collection gets its vector index (IVF with 8-bit
    scalar quantisation; search is exact below it). The index is trained again when
    the collection has doubled since, or has more than ``max_index_segments`` delta
    segments. ``nprobes`` (IVF partitions searched at least; more when a filter leaves
    fewer than ``k`` rows) and ``refine_factor`` (candidates re-ranked on full vectors)
    tune it; see ``bench/rag_index_latency.py``. ``keep_versions_for``: how long old
    table versions stay on disk for readers still using them.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        ann_threshold: int = 20_000,
        reindex_after_rows: int = 5_000,
        reindex_idle_s: float = 1.0,
        max_index_segments: int = 8,
        nprobes: int = 20,
        refine_factor: int = 3,
        keep_versions_for: timedelta = timedelta(hours=1),
    ) -> None:
        self._path = Path(path)
        self._ann_threshold = ann_threshold
        self._reindex_after_rows = reindex_after_rows
        self._reindex_idle_s = reindex_idle_s
        self._max_index_segments = max_index_segments
        self._nprobes = nprobes
        self._refine_factor = refine_factor
        self._keep_versions_for = keep_versions_for
        self._db: lancedb.AsyncConnection | None = None
        self._collections: dict[str, _Collection] = {}
        self._lock = asyncio.Lock()
        self._closing = asyncio.Event()

    async def create(self, spec: CollectionSpec) -> None:
        """Create the collection's table and indexes; a no-op when it exists with ``spec``."""
        check_spec(spec)
        async with self._lock:
            db = await self._connect()
            if spec.name in await _table_names(db):
                existing = await self._open(spec.name)
                if existing.spec != spec:
                    raise ValueError(
                        f"collection {spec.name!r} exists with a different spec:"
                        f" {existing.spec} (asked for {spec})"
                    )
                return
            schema = _schema(spec)
            table = await db.create_table(spec.name, schema=schema)
            await _create_base_indexes(table)
            self._collections[spec.name] = _Collection(table, spec, schema, 0, 0)

    async def drop(self, name: str) -> None:
        """Drop the collection's table; a no-op when there is none."""
        check_collection_name(name)
        async with self._lock:
            collection = self._collections.pop(name, None)
            if collection is not None:
                await _stop_upkeep(collection)
                _close(collection.table)
            db = await self._connect()
            await db.drop_table(name, ignore_missing=True)

    async def replace_documents(
        self, name: str, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]
    ) -> None:
        """Replace the documents' chunks in one commit (a single ``merge_insert``)."""
        collection = await self._collection(name)
        check_records(collection.spec, document_ids, chunks)
        if not document_ids:
            return
        data = _to_arrow(collection, chunks)
        scope = f"document_id IN ({', '.join(_literal(doc) for doc in set(document_ids))})"
        async with collection.write_lock:
            result = await (
                collection.table.merge_insert("chunk_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(scope)
                .execute(data)
            )
            await self._after_write(collection, result.num_rows + result.num_deleted_rows)

    async def delete_source(self, name: str, source_id: str) -> int:
        """Delete the source's chunks in one commit; returns how many there were."""
        collection = await self._collection(name)
        empty = collection.schema.empty_table()
        async with collection.write_lock:
            # An empty merge that deletes unmatched target rows reports how many it
            # deleted, which Table.delete does not.
            result = await (
                collection.table.merge_insert("chunk_id")
                .when_not_matched_by_source_delete(f"source_id = {_literal(source_id)}")
                .execute(empty)
            )
            deleted = int(result.num_deleted_rows)
            await self._after_write(collection, deleted)
        return deleted

    async def dense(
        self, name: str, vector: npt.NDArray[np.float32], k: int, scope: SearchScope
    ) -> list[Hit]:
        """The ``k`` nearest chunks by cosine similarity, the scope applied as a prefilter."""
        check_k(k)
        collection = await self._collection(name)
        query_vector = as_vector(vector, collection.spec.dimensions)
        where = _where(scope, collection.spec)
        query = (
            collection.table.query()
            .nearest_to(query_vector)
            .column("vector")
            .distance_type("cosine")
            .limit(k)
        )
        if collection.vector_rows:
            # maximum_nprobes(0): probe further partitions while a filter leaves fewer
            # than k rows, so restrictive scopes still fill k hits. Refining re-ranks on
            # the full vectors, which also makes the scores exact.
            query = (
                query.maximum_nprobes(0)
                .minimum_nprobes(self._nprobes)
                .refine_factor(self._refine_factor)
            )
        if where:
            query = query.where(where)
        table = await query.to_arrow()
        scores = (1.0 - table.column("_distance").to_numpy()).tolist()
        return _hits(table, collection.spec, scores)

    async def lexical(self, name: str, query: str, k: int, scope: SearchScope) -> list[Hit]:
        """The ``k`` best chunks by BM25 on ``text``, the scope applied as a prefilter."""
        check_k(k)
        collection = await self._collection(name)
        where = _where(scope, collection.spec)
        query = lexical_query(query)
        if not query.strip():
            return []
        search = collection.table.query().nearest_to_text(query, columns="text").limit(k)
        if where:
            search = search.where(where)
        table = await search.to_arrow()
        return _hits(table, collection.spec, table.column("_score").to_pylist())

    async def get(self, name: str, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """The chunks with these ids that exist."""
        collection = await self._collection(name)
        if not chunk_ids:
            return []
        where = f"chunk_id IN ({', '.join(_literal(chunk_id) for chunk_id in set(chunk_ids))})"
        table = await collection.table.query().where(where).to_arrow()
        return _records(table, collection.spec)

    async def count(self, name: str) -> int:
        """How many chunks the collection holds."""
        collection = await self._collection(name)
        return int(await collection.table.count_rows())

    async def optimize(self, name: str) -> None:
        """Bring the collection's indexes up to date now (e.g. after a bulk load).

        Otherwise this happens on its own once writes pause; see the class docstring.
        """
        collection = await self._collection(name)
        async with collection.write_lock:
            if collection.pending_rows:
                await self._upkeep(collection)

    async def close(self) -> None:
        """Finish running upkeep, close every table and the connection; data stays on disk."""
        self._closing.set()
        tasks = [c.upkeep for c in self._collections.values() if c.upkeep is not None]
        await asyncio.gather(*tasks)
        self._closing = asyncio.Event()
        async with self._lock:
            for collection in self._collections.values():
                _close(collection.table)
            self._collections.clear()
            if self._db is not None:
                self._db.close()  # type: ignore[no-untyped-call]
                self._db = None

    async def _connect(self) -> lancedb.AsyncConnection:
        if self._db is None:
            self._path.mkdir(parents=True, exist_ok=True)
            self._db = await lancedb.connect_async(self._path)
        return self._db

    async def _collection(self, name: str) -> _Collection:
        collection = self._collections.get(name)
        if collection is not None:
            return collection
        check_collection_name(name)
        async with self._lock:
            db = await self._connect()
            if name not in await _table_names(db):
                raise CollectionNotFoundError(name)
            return await self._open(name)

    async def _open(self, name: str) -> _Collection:
        """The cached collection, or the table opened; the caller holds ``self._lock``."""
        collection = self._collections.get(name)
        if collection is not None:
            return collection
        db = await self._connect()
        table = await db.open_table(name)
        schema = await table.schema()
        spec = _spec_of(name, schema)
        text = await table.index_stats(_TEXT_INDEX)
        vector = await table.index_stats(_VECTOR_INDEX)
        pending = text.num_unindexed_rows if text is not None else 0
        vector_rows = vector.num_indexed_rows if vector is not None else 0
        collection = _Collection(table, spec, schema, vector_rows, pending)
        self._collections[name] = collection
        if pending:  # left by a process that stopped before its upkeep
            collection.last_write = time.monotonic()
            collection.upkeep = asyncio.create_task(self._upkeep_when_idle(collection))
        return collection

    async def _after_write(self, collection: _Collection, changed_rows: int) -> None:
        """Count a write's rows; do upkeep now past the threshold, else once idle.

        Called with the collection's write lock held.
        """
        if changed_rows == 0:
            return
        collection.pending_rows += changed_rows
        collection.last_write = time.monotonic()
        if collection.pending_rows >= self._reindex_after_rows:
            await self._upkeep(collection)
        elif collection.upkeep is None or collection.upkeep.done():
            collection.upkeep = asyncio.create_task(self._upkeep_when_idle(collection))

    async def _upkeep_when_idle(self, collection: _Collection) -> None:
        while collection.pending_rows and not self._closing.is_set():
            wait = collection.last_write + self._reindex_idle_s - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)
                continue
            async with collection.write_lock:
                if not collection.pending_rows or self._closing.is_set():
                    return
                try:
                    await self._upkeep(collection)
                except (OSError, RuntimeError, ValueError):
                    # Searches stay correct without upkeep, only slower; the next
                    # write tries again.
                    _log.exception("index upkeep of %s failed", collection.spec.name)
                    return

    async def _upkeep(self, collection: _Collection) -> None:
        """Compact, fold pending rows into the indexes, (re)train the vector index."""
        table = collection.table
        await table.optimize(cleanup_older_than=self._keep_versions_for)
        collection.pending_rows = 0
        rows = int(await table.count_rows())
        if not collection.vector_rows:
            if rows >= self._ann_threshold:
                await self._train_vector_index(collection, rows)
            return
        stats = await table.index_stats(_VECTOR_INDEX)
        segments = (stats.num_indices or 1) if stats is not None else 1
        if rows >= 2 * collection.vector_rows or segments > self._max_index_segments:
            await self._train_vector_index(collection, rows)

    async def _train_vector_index(self, collection: _Collection, rows: int) -> None:
        config = IvfSq(distance_type="cosine", num_partitions=max(1, math.isqrt(rows)))
        await collection.table.create_index(
            "vector",
            config=config,  # type: ignore[arg-type]  # IvfSq is accepted, not annotated
            name=_VECTOR_INDEX,
            replace=True,
        )
        collection.vector_rows = rows


async def _stop_upkeep(collection: _Collection) -> None:
    """Cancel a collection's idle upkeep; waits out one that is running."""
    async with collection.write_lock:
        # Holding the lock, the task is asleep or waiting for it, never mid-optimize.
        if collection.upkeep is not None:
            collection.upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collection.upkeep


async def _table_names(db: lancedb.AsyncConnection) -> set[str]:
    names: set[str] = set()
    token: str | None = None
    while True:
        page = await db.list_tables(page_token=token)
        names.update(page.tables)
        token = page.page_token
        if not token:
            return names


async def _create_base_indexes(table: lancedb.AsyncTable) -> None:
    await table.create_index(
        "text",
        config=FTS(
            language="English",
            stem=True,
            remove_stop_words=True,
            lower_case=True,
            ascii_folding=True,
        ),
        name=_TEXT_INDEX,
    )
    for column, kind in _SCALAR_INDEXES:
        await table.create_index(column, config=kind())


def _schema(spec: CollectionSpec) -> pa.Schema:
    fields = [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("ordinal", pa.int64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("context", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("doc_type", pa.string(), nullable=False),
        pa.field("section", pa.string()),
        pa.field("page", pa.int64()),
        pa.field("uri", pa.string()),
        pa.field("created_at", _ARROW_TYPES["datetime"]),
        pa.field("updated_at", _ARROW_TYPES["datetime"]),
        pa.field("access_groups", pa.list_(pa.string()), nullable=False),
        pa.field("metadata", pa.string(), nullable=False),
        *(pa.field(column_of(name), _ARROW_TYPES[kind]) for name, kind in spec.fields.items()),
        pa.field("vector", pa.list_(pa.float32(), spec.dimensions), nullable=False),
    ]
    spec_json = json.dumps({"dimensions": spec.dimensions, "fields": spec.fields})
    return pa.schema(fields, metadata={_SPEC_KEY: spec_json.encode()})


def _spec_of(name: str, schema: pa.Schema) -> CollectionSpec:
    stored = json.loads((schema.metadata or {})[_SPEC_KEY])
    return CollectionSpec(name, int(stored["dimensions"]), dict(stored["fields"]))


def _to_arrow(collection: _Collection, chunks: Sequence[ChunkRecord]) -> pa.Table:
    declared = collection.spec.fields
    columns: dict[str, list[Any]] = {name: [] for name in collection.schema.names}
    for chunk in chunks:
        row: dict[str, Any] = {
            **scalar_columns(chunk),
            "access_groups": list(chunk.access_groups) or [_PUBLIC],
            "metadata": encode_metadata(chunk.metadata),
            **declared_values(chunk, declared),
        }
        for name, value in row.items():
            columns[name].append(value)
    dimensions = collection.spec.dimensions
    matrix = np.asarray([chunk.vector for chunk in chunks], dtype=np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(matrix.reshape(-1), dimensions)
    arrays = [
        vectors if name == "vector" else pa.array(columns[name], type=column.type)
        for name, column in zip(collection.schema.names, collection.schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=collection.schema)


def _where(scope: SearchScope, spec: CollectionSpec) -> str:
    conditions, groups = resolve_scope(scope, spec.fields)
    clauses = [_clause(condition) for condition in conditions]
    if groups is not None:
        names = ", ".join(_literal(group) for group in [_PUBLIC, *sorted(groups)])
        clauses.append(f"array_has_any(access_groups, [{names}])")
    return " AND ".join(clauses)


def _clause(condition: TypedCondition) -> str:
    column = f"`{condition.column}`"
    literals = [_literal(value) for value in condition.values]
    if condition.op is Op.IN:
        return f"{column} IN ({', '.join(literals)})" if literals else "false"
    if condition.op is Op.NIN:
        if not literals:
            return "true"
        return f"({column} IS NULL OR {column} NOT IN ({', '.join(literals)}))"
    if condition.op is Op.NE:
        return f"({column} IS NULL OR {column} <> {literals[0]})"
    return f"{column} {_SQL_OPS[condition.op]} {literals[0]}"


def _literal(value: Scalar) -> str:
    """A SQL literal for DataFusion; strings quoted with embedded quotes doubled."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        instant = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"TIMESTAMP '{instant}'"
    return "'" + value.replace("'", "''") + "'"


def _hits(table: pa.Table, spec: CollectionSpec, scores: Sequence[float]) -> list[Hit]:
    records = _records(table, spec)
    return [Hit(record, float(score)) for record, score in zip(records, scores, strict=True)]


def _records(table: pa.Table, spec: CollectionSpec) -> list[ChunkRecord]:
    if table.num_rows == 0:
        return []
    vectors = (
        table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    ).reshape(table.num_rows, spec.dimensions)
    names = [
        name
        for name in table.column_names
        if name != "vector" and not name.startswith("_") and field_of(name) is None
    ]
    columns = {name: table.column(name).to_pylist() for name in names}
    return [
        ChunkRecord(
            chunk_id=columns["chunk_id"][row],
            document_id=columns["document_id"][row],
            source_id=columns["source_id"][row],
            ordinal=columns["ordinal"][row],
            text=columns["text"][row],
            context=columns["context"][row],
            title=columns["title"][row],
            doc_type=columns["doc_type"][row],
            vector=vectors[row].astype(np.float32, copy=True),
            section=columns["section"][row],
            page=columns["page"][row],
            uri=columns["uri"][row],
            created_at=_utc(columns["created_at"][row]),
            updated_at=_utc(columns["updated_at"][row]),
            access_groups=_groups(columns["access_groups"][row]),
            metadata=decode_metadata(columns["metadata"][row]),
        )
        for row in range(table.num_rows)
    ]


def _groups(stored: list[str]) -> tuple[str, ...]:
    return () if stored == [_PUBLIC] else tuple(stored)


def _close(table: lancedb.AsyncTable) -> None:
    table.close()  # type: ignore[no-untyped-call]


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)
