"""The production chunk index: PostgreSQL with pgvector and full-text search.

One table per collection (``<prefix><name>``), so each knowledge base has its own HNSW
graph sized to it, and dropping a knowledge base is ``DROP TABLE``. Columns: the chunk's
fields, ``access_groups text[]`` (GIN, ``&&``), ``metadata jsonb`` with the whole
metadata, one typed column per declared field (B-tree), ``embedding vector(dim)`` (HNSW,
cosine) and a generated ``tsv`` (``to_tsvector('english', text)``, GIN).

Dense search orders by ``embedding <=> query`` with the scope in the ``WHERE`` clause.
pgvector 0.8's iterative index scans keep walking the HNSW graph until ``k`` rows pass
the filter; when a scan still ends short (``hnsw.max_scan_tuples``) the query is run
again without the index, so a restrictive scope always gets every match up to ``k``.

Lexical search matches any of the query's stemmed terms (as BM25 does) through the
GIN index and ranks by ``ts_rank`` with length normalisation. Terms that ANALYZE found
in more than ``max_term_share`` of the chunks are left out of the match: otherwise a
query with one common word makes PostgreSQL rank a large part of the collection
(BM25 would give such terms little weight anyway; PostgreSQL's ranking has no IDF).

The spec of a collection is read back from its table's columns, so the database holds
no other state.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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
    field_of,
    lexical_query,
    metadata_to_json,
    resolve_scope,
    scalar_columns,
)
from atrium.rag.index.base import CollectionSpec
from atrium.rag.types import ChunkRecord, FieldType, Hit, Op, SearchScope

IterativeScan = Literal["strict_order", "relaxed_order", "off"]

_PREFIX: Final = re.compile(r"[a-z_][a-z0-9_]{0,19}")
_SQL_TYPES: Final[dict[FieldType, Any]] = {
    "string": sa.Text(),
    "int": sa.BigInteger(),
    "float": sa.Double(),
    "bool": sa.Boolean(),
    "datetime": sa.TIMESTAMP(timezone=True),
}
# format_type() names of the declared-field column types, for reading a spec back.
_FIELD_TYPES: Final[dict[str, FieldType]] = {
    "text": "string",
    "bigint": "int",
    "double precision": "float",
    "boolean": "bool",
    "timestamp with time zone": "datetime",
}
_COMPARISONS: Final = {
    Op.EQ: operator.eq,
    Op.GT: operator.gt,
    Op.GTE: operator.ge,
    Op.LT: operator.lt,
    Op.LTE: operator.le,
}
_VECTOR_TYPE: Final = re.compile(r"vector\((\d+)\)")
_ITERATIVE_SCAN_VERSION: Final = (0, 8, 0)
_UNDEFINED_TABLE: Final = "42P01"


class _TsQuery(sa.types.UserDefinedType[str]):
    """PostgreSQL's ``tsquery``, for a cast; SQLAlchemy has no type of its own for it."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "tsquery"


@dataclass(frozen=True, slots=True)
class _Collection:
    table: sa.Table
    spec: CollectionSpec
    #: The columns a search returns (everything but the tsvector).
    columns: tuple[sa.ColumnElement[Any], ...]


class PgVectorChunkIndex:
    """A :class:`~atrium.rag.index.base.ChunkIndex` on PostgreSQL with pgvector.

    ``engine`` is an SQLAlchemy async engine on asyncpg; :meth:`from_url` makes one that
    :meth:`close` disposes of. ``ef_search`` is HNSW's candidate list size (at least
    ``k`` is used); ``iterative_scan`` needs pgvector 0.8 and is ignored before it.
    ``max_term_share``: lexical search leaves out query terms found in more than this
    share of the chunks (as ANALYZE counted them), unless no other term is left.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table_prefix: str = "rag_chunks_",
        ef_search: int = 128,
        iterative_scan: IterativeScan = "strict_order",
        max_scan_tuples: int = 20_000,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 64,
        max_term_share: float = 0.02,
        owns_engine: bool = False,
    ) -> None:
        if _PREFIX.fullmatch(table_prefix) is None:
            raise ValueError(f"invalid table prefix {table_prefix!r}")
        self._engine = engine
        self._prefix = table_prefix
        self._ef_search = ef_search
        self._iterative_scan = iterative_scan
        self._max_scan_tuples = max_scan_tuples
        self._hnsw = {"m": hnsw_m, "ef_construction": hnsw_ef_construction}
        self._owns_engine = owns_engine
        self._collections: dict[str, _Collection] = {}
        self._iterative_supported: bool | None = None
        self._max_term_share = max_term_share
        self._term_stats: dict[str, tuple[float, dict[str, float]]] = {}

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10, **options: Any) -> PgVectorChunkIndex:
        """An index on its own engine for ``url`` (``postgresql+asyncpg://...``)."""
        engine = create_async_engine(url, pool_size=pool_size, pool_pre_ping=True)
        return cls(engine, owns_engine=True, **options)

    async def create(self, spec: CollectionSpec) -> None:
        """Create the table and its indexes; a no-op when it exists with ``spec``."""
        check_spec(spec)
        table_name = self._prefix + spec.name
        async with self._engine.begin() as conn:
            # Serialises concurrent creators (and the extension check) across processes.
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(table_name))))
            await _ensure_extension(conn)
            existing = await _read_spec(conn, spec.name, table_name)
            if existing is not None:
                if existing != spec:
                    raise ValueError(
                        f"collection {spec.name!r} exists with a different spec:"
                        f" {existing} (asked for {spec})"
                    )
                return
            table = _table(spec, table_name, self._hnsw)
            await conn.run_sync(table.metadata.create_all)
        self._collections[spec.name] = _collection(table, spec)

    async def drop(self, name: str) -> None:
        """Drop the collection's table; a no-op when there is none."""
        check_collection_name(name)
        self._collections.pop(name, None)
        self._term_stats.pop(self._prefix + name, None)
        table = sa.Table(self._prefix + name, sa.MetaData())
        async with self._engine.begin() as conn:
            await conn.run_sync(lambda sync: table.drop(sync, checkfirst=True))

    async def replace_documents(
        self, name: str, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]
    ) -> None:
        """Delete the documents' chunks and insert ``chunks`` in one transaction."""
        collection = await self._collection(name)
        check_records(collection.spec, document_ids, chunks)
        if not document_ids:
            return
        table = collection.table
        rows = [_row(chunk, collection.spec) for chunk in chunks]
        async with self._transaction(name) as conn:
            await _lock_writes(conn, table)
            await conn.execute(sa.delete(table).where(table.c.document_id.in_(set(document_ids))))
            if rows:
                insert = pg_insert(table)
                # Chunk ids are global: one that moved to another document is taken over.
                upsert = insert.on_conflict_do_update(
                    index_elements=[table.c.chunk_id],
                    set_={column: insert.excluded[column] for column in rows[0]},
                )
                await conn.execute(upsert, rows)

    async def delete_source(self, name: str, source_id: str) -> int:
        """Delete every chunk of the source; returns how many there were."""
        collection = await self._collection(name)
        table = collection.table
        async with self._transaction(name) as conn:
            await _lock_writes(conn, table)
            result = await conn.execute(sa.delete(table).where(table.c.source_id == source_id))
        return int(result.rowcount)

    async def dense(
        self, name: str, vector: npt.NDArray[np.float32], k: int, scope: SearchScope
    ) -> list[Hit]:
        """The ``k`` nearest chunks by cosine similarity, the scope in the WHERE clause."""
        check_k(k)
        collection = await self._collection(name)
        query_vector = as_vector(vector, collection.spec.dimensions)
        where = _where(collection, scope)
        distance = collection.table.c.embedding.cosine_distance(query_vector)
        statement = (
            sa.select(*collection.columns, (1 - distance).label("score"))
            .where(*where)
            .order_by(distance)
            .limit(k)
        )
        async with self._transaction(name) as conn:
            await self._configure_hnsw(conn, k)
            rows = (await conn.execute(statement)).all()
            if len(rows) < k:
                # The index scan may have stopped short (max_scan_tuples, or no iterative
                # scans before pgvector 0.8): run the query exactly, without the index.
                await conn.execute(sa.select(sa.func.set_config("enable_indexscan", "off", True)))
                rows = (await conn.execute(statement)).all()
        return [Hit(_record(row._mapping), float(row.score)) for row in rows]

    async def lexical(self, name: str, query: str, k: int, scope: SearchScope) -> list[Hit]:
        """The ``k`` chunks ranked best by ``ts_rank`` among those with a selective term."""
        check_k(k)
        collection = await self._collection(name)
        where = _where(collection, scope)
        query = lexical_query(query)
        if not query.strip():
            return []
        table = collection.table
        async with self._transaction(name) as conn:
            lexemes = (await conn.execute(_LEXEMES, {"query": query})).scalar_one()
            if not lexemes:
                return []
            frequencies = await self._term_frequencies(conn, table.name)
            terms = _selective_terms(lexemes, frequencies, self._max_term_share)
            tsquery = sa.cast(sa.literal(" | ".join(map(_quote_lexeme, terms))), _TsQuery())
            rank = sa.func.ts_rank(table.c.tsv, tsquery, 1)
            statement = (
                sa.select(*collection.columns, rank.label("score"))
                .where(table.c.tsv.op("@@")(tsquery), *where)
                .order_by(rank.desc(), table.c.chunk_id)
                .limit(k)
            )
            rows = (await conn.execute(statement)).all()
        return [Hit(_record(row._mapping), float(row.score)) for row in rows]

    async def _term_frequencies(self, conn: AsyncConnection, table_name: str) -> dict[str, float]:
        """Share of chunks holding each common lexeme, from ANALYZE's statistics (cached)."""
        cached = self._term_stats.get(table_name)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        row = (await conn.execute(_COMMON_LEXEMES, {"table": table_name})).first()
        frequencies: dict[str, float] = {}
        if row is not None and row.elems is not None:
            # The frequency array has three summary values after the per-lexeme ones.
            frequencies = dict(zip(row.elems, row.freqs, strict=False))
        self._term_stats[table_name] = (now + _TERM_STATS_TTL_S, frequencies)
        return frequencies

    async def get(self, name: str, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """The chunks with these ids that exist."""
        collection = await self._collection(name)
        if not chunk_ids:
            return []
        statement = sa.select(*collection.columns).where(
            collection.table.c.chunk_id.in_(set(chunk_ids))
        )
        async with self._transaction(name) as conn:
            rows = (await conn.execute(statement)).all()
        return [_record(row._mapping) for row in rows]

    async def count(self, name: str) -> int:
        """How many chunks the collection holds."""
        collection = await self._collection(name)
        statement = sa.select(sa.func.count()).select_from(collection.table)
        async with self._transaction(name) as conn:
            return int((await conn.execute(statement)).scalar_one())

    async def close(self) -> None:
        """Dispose of the engine when this index made it."""
        self._collections.clear()
        if self._owns_engine:
            await self._engine.dispose()

    async def _collection(self, name: str) -> _Collection:
        collection = self._collections.get(name)
        if collection is not None:
            return collection
        check_collection_name(name)
        table_name = self._prefix + name
        async with self._engine.connect() as conn:
            spec = await _read_spec(conn, name, table_name)
        if spec is None:
            raise CollectionNotFoundError(name)
        collection = _collection(_table(spec, table_name, self._hnsw), spec)
        self._collections[name] = collection
        return collection

    @asynccontextmanager
    async def _transaction(self, name: str) -> AsyncIterator[AsyncConnection]:
        """A transaction; a table dropped meanwhile (by another process) is reported."""
        try:
            async with self._engine.begin() as conn:
                yield conn
        except ProgrammingError as error:
            if getattr(error.orig, "sqlstate", None) != _UNDEFINED_TABLE:
                raise
            self._collections.pop(name, None)
            raise CollectionNotFoundError(name) from error

    async def _configure_hnsw(self, conn: AsyncConnection, k: int) -> None:
        if self._iterative_supported is None:
            version = (await conn.execute(_EXTENSION_VERSION)).scalar_one_or_none()
            self._iterative_supported = _version(version) >= _ITERATIVE_SCAN_VERSION
        settings = [sa.func.set_config("hnsw.ef_search", str(max(self._ef_search, k)), True)]
        if self._iterative_supported:
            settings += [
                sa.func.set_config("hnsw.iterative_scan", self._iterative_scan, True),
                sa.func.set_config("hnsw.max_scan_tuples", str(self._max_scan_tuples), True),
            ]
        await conn.execute(sa.select(*settings))


_LEXEMES: Final = sa.text("SELECT tsvector_to_array(to_tsvector('english'::regconfig, :query))")
_COMMON_LEXEMES: Final = sa.text(
    "SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs"
    " FROM pg_stats WHERE schemaname = current_schema() AND tablename = :table"
    " AND attname = 'tsv'"
)
_TERM_STATS_TTL_S: Final = 300.0
_EXTENSION_VERSION: Final = sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
_COLUMNS_OF: Final = sa.text(
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = to_regclass(:relation) AND attnum > 0 AND NOT attisdropped"
)


def _selective_terms(
    lexemes: Sequence[str], frequencies: dict[str, float], max_share: float
) -> list[str]:
    """The query's lexemes without the common ones (which would match, and make
    PostgreSQL rank, a large part of the collection); the rarest two if all are common.

    Leaving common terms out is what BM25's IDF nearly does to their weight anyway.
    """
    rare = [lexeme for lexeme in lexemes if frequencies.get(lexeme, 0.0) <= max_share]
    return rare or sorted(lexemes, key=lambda lexeme: frequencies.get(lexeme, 0.0))[:2]


def _quote_lexeme(lexeme: str) -> str:
    """A lexeme as tsquery input: quoted, with quotes and backslashes doubled."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _lock_key(table_name: str) -> sa.ColumnElement[Any]:
    return sa.func.hashtext(table_name)


async def _lock_writes(conn: AsyncConnection, table: sa.Table) -> None:
    """Serialise writers of one collection, so two replaces of a document cannot mix."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(table.name))))


async def _ensure_extension(conn: AsyncConnection) -> None:
    if (await conn.execute(_EXTENSION_VERSION)).scalar_one_or_none() is None:
        await conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))


async def _read_spec(conn: AsyncConnection, name: str, table_name: str) -> CollectionSpec | None:
    relation = '"' + table_name + '"'
    rows = (await conn.execute(_COLUMNS_OF, {"relation": relation})).all()
    if not rows:
        return None
    dimensions = 0
    fields: dict[str, FieldType] = {}
    for column, type_name in rows:
        match = _VECTOR_TYPE.fullmatch(type_name)
        if column == "embedding" and match is not None:
            dimensions = int(match.group(1))
        elif (declared := field_of(column)) is not None:
            fields[declared] = _FIELD_TYPES[type_name]
    return CollectionSpec(name, dimensions, fields)


def _version(text: str | None) -> tuple[int, ...]:
    if text is None:
        return (0,)
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _table(spec: CollectionSpec, table_name: str, hnsw: dict[str, int]) -> sa.Table:
    declared = [column_of(name) for name in spec.fields]
    return sa.Table(
        table_name,
        sa.MetaData(),
        sa.Column("chunk_id", sa.Text(), primary_key=True),
        sa.Column("document_id", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("ordinal", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("doc_type", sa.Text(), nullable=False),
        sa.Column("section", sa.Text()),
        sa.Column("page", sa.BigInteger()),
        sa.Column("uri", sa.Text()),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True)),
        sa.Column("updated_at", sa.TIMESTAMP(timezone=True)),
        sa.Column("access_groups", ARRAY(sa.Text()), nullable=False),
        sa.Column("metadata", JSONB(), nullable=False),
        *(sa.Column(column_of(name), _SQL_TYPES[kind]) for name, kind in spec.fields.items()),
        sa.Column("embedding", VECTOR(spec.dimensions), nullable=False),
        sa.Column(
            "tsv",
            TSVECTOR(),
            sa.Computed("to_tsvector('english'::regconfig, text)", persisted=True),
        ),
        sa.Index(
            f"{table_name}_vec",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with=hnsw,
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        sa.Index(f"{table_name}_tsv", "tsv", postgresql_using="gin"),
        sa.Index(f"{table_name}_acl", "access_groups", postgresql_using="gin"),
        sa.Index(f"{table_name}_doc", "document_id"),
        sa.Index(f"{table_name}_src", "source_id"),
        *(sa.Index(f"{table_name}_f{i}", column) for i, column in enumerate(declared)),
    )


def _collection(table: sa.Table, spec: CollectionSpec) -> _Collection:
    return _Collection(table, spec, tuple(column for column in table.c if column.name != "tsv"))


def _where(collection: _Collection, scope: SearchScope) -> list[sa.ColumnElement[bool]]:
    conditions, groups = resolve_scope(scope, collection.spec.fields)
    table = collection.table
    clauses = [_clause(table.c[condition.column], condition) for condition in conditions]
    if groups is not None:
        public = sa.func.cardinality(table.c.access_groups) == 0
        if groups:
            clauses.append(sa.or_(public, table.c.access_groups.overlap(sorted(groups))))
        else:
            clauses.append(public)
    return clauses


def _clause(column: sa.Column[Any], condition: TypedCondition) -> sa.ColumnElement[bool]:
    values = list(condition.values)
    if condition.op is Op.IN:
        return column.in_(values) if values else sa.false()
    if condition.op is Op.NIN:
        return sa.or_(column.is_(None), column.not_in(values)) if values else sa.true()
    if condition.op is Op.NE:
        return sa.or_(column.is_(None), column != values[0])
    compare: Callable[[Any, Any], sa.ColumnElement[bool]] = _COMPARISONS[condition.op]
    return compare(column, values[0])


def _row(chunk: ChunkRecord, spec: CollectionSpec) -> dict[str, Any]:
    return {
        **scalar_columns(chunk),
        "access_groups": list(chunk.access_groups),
        "metadata": metadata_to_json(chunk.metadata),
        "embedding": np.asarray(chunk.vector, dtype=np.float32),
        **declared_values(chunk, spec.fields),
    }


def _record(values: sa.RowMapping) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=values["chunk_id"],
        document_id=values["document_id"],
        source_id=values["source_id"],
        ordinal=values["ordinal"],
        text=values["text"],
        context=values["context"],
        title=values["title"],
        doc_type=values["doc_type"],
        vector=np.asarray(values["embedding"], dtype=np.float32),
        section=values["section"],
        page=values["page"],
        uri=values["uri"],
        created_at=_utc(values["created_at"]),
        updated_at=_utc(values["updated_at"]),
        access_groups=tuple(values["access_groups"]),
        metadata=decode_metadata(values["metadata"]),
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)
