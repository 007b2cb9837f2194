"""Knowledge bases, their sources and documents, answered queries and feedback."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.store.db import Database
from atrium.store.tables import (
    KbDocumentRow,
    KbFeedbackRow,
    KbQueryRow,
    KbSourceRow,
    KnowledgeBaseRow,
)


def new_id(prefix: str) -> str:
    """A random id with a readable prefix (``kb_``, ``src_``, ``doc_``, ``qry_``...)."""
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class KnowledgeBaseRecord:
    """A knowledge base as stored; ``spec`` is validated by the RAG service."""

    id: str
    name: str
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A source of a knowledge base and the state of its last sync."""

    id: str
    kb_id: str
    name: str
    spec: dict[str, Any]
    status: str
    last_error: str | None
    last_sync_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document as last synced."""

    id: str
    kb_id: str
    source_id: str
    key: str
    content_hash: str
    status: str
    reason: str | None
    title: str | None
    uri: str | None
    doc_type: str | None
    chunk_count: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """Feedback joined with its query: what the feedback model learns from."""

    query_vector: bytes | None
    retrieved: list[dict[str, Any]]
    rating: int | None
    useful: list[str]
    not_useful: list[str]


@dataclass(frozen=True, slots=True)
class FeedbackEntry:
    """One piece of feedback as an administrator reads it: with its question."""

    id: str
    query_id: str
    query: str
    key_id: str | None
    rating: int | None
    useful: list[str]
    not_useful: list[str]
    comment: str | None
    created_at: datetime

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view."""
        return {
            "id": self.id,
            "object": "knowledge_base.feedback",
            "query_id": self.query_id,
            "query": self.query,
            "key_id": self.key_id,
            "rating": {1: "up", -1: "down"}.get(self.rating or 0),
            "useful": self.useful,
            "not_useful": self.not_useful,
            "comment": self.comment,
            "created_at": self.created_at.isoformat(),
        }


class KnowledgeRepository:
    """Persistence for the RAG engine's control data (chunks live in the index)."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    # Knowledge bases -------------------------------------------------------------------

    async def create_kb(self, name: str, spec: dict[str, Any]) -> KnowledgeBaseRecord:
        """Create a knowledge base; a taken name is a 400."""
        now = self._clock()
        row = KnowledgeBaseRow(
            id=new_id("kb"), name=name, spec=spec, created_at=now, updated_at=now
        )
        msg = f"a knowledge base named {name!r} exists"
        await self._db.insert(row, InvalidRequestError(msg, param="name"))
        return _kb(row)

    async def find_kb(self, id_or_name: str) -> KnowledgeBaseRecord | None:
        """The knowledge base with this id or name, or None."""
        async with self._db.session() as session:
            row = await session.get(KnowledgeBaseRow, id_or_name)
            if row is None:
                row = await session.scalar(
                    select(KnowledgeBaseRow).where(KnowledgeBaseRow.name == id_or_name)
                )
            return None if row is None else _kb(row)

    async def get_kb(self, id_or_name: str) -> KnowledgeBaseRecord:
        """The knowledge base with this id or name; 404 if there is none."""
        record = await self.find_kb(id_or_name)
        if record is None:
            raise NotFoundError(f"no knowledge base {id_or_name!r}")
        return record

    async def list_kbs(self) -> builtins.list[KnowledgeBaseRecord]:
        """Every knowledge base, by name."""
        async with self._db.session() as session:
            rows = await session.scalars(select(KnowledgeBaseRow).order_by(KnowledgeBaseRow.name))
            return [_kb(row) for row in rows]

    async def update_kb(self, kb_id: str, spec: dict[str, Any]) -> KnowledgeBaseRecord:
        """Replace a knowledge base's spec."""
        async with self._db.session() as session:
            row = await session.get(KnowledgeBaseRow, kb_id)
            if row is None:
                raise NotFoundError(f"no knowledge base {kb_id!r}")
            row.spec, row.updated_at = spec, self._clock()
            await session.commit()
            return _kb(row)

    async def delete_kb(self, kb_id: str) -> None:
        """Delete a knowledge base with its sources, documents, queries and feedback."""
        async with self._db.session() as session:
            await session.execute(delete(KbFeedbackRow).where(KbFeedbackRow.kb_id == kb_id))
            await session.execute(delete(KbQueryRow).where(KbQueryRow.kb_id == kb_id))
            await session.execute(delete(KbDocumentRow).where(KbDocumentRow.kb_id == kb_id))
            await session.execute(delete(KbSourceRow).where(KbSourceRow.kb_id == kb_id))
            await session.execute(delete(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb_id))
            await session.commit()

    # Sources ---------------------------------------------------------------------------

    async def add_source(self, kb_id: str, name: str, spec: dict[str, Any]) -> SourceRecord:
        """Add a source; a name taken within the knowledge base is a 400."""
        row = KbSourceRow(
            id=new_id("src"),
            kb_id=kb_id,
            name=name,
            spec=spec,
            status="new",
            last_error=None,
            last_sync_at=None,
            created_at=self._clock(),
        )
        async with self._db.session() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                msg = f"the knowledge base already has a source named {name!r}"
                raise InvalidRequestError(msg, param="name") from None
        return _source(row)

    async def sources(self, kb_id: str) -> builtins.list[SourceRecord]:
        """A knowledge base's sources, by name."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(KbSourceRow).where(KbSourceRow.kb_id == kb_id).order_by(KbSourceRow.name)
            )
            return [_source(row) for row in rows]

    async def get_source(self, kb_id: str, id_or_name: str) -> SourceRecord:
        """A source of ``kb_id`` by id or name; 404 if there is none."""
        async with self._db.session() as session:
            row = await session.scalar(
                select(KbSourceRow).where(
                    KbSourceRow.kb_id == kb_id,
                    (KbSourceRow.id == id_or_name) | (KbSourceRow.name == id_or_name),
                )
            )
        if row is None:
            raise NotFoundError(f"no source {id_or_name!r} in this knowledge base")
        return _source(row)

    async def claim_source(self, source_id: str, stale_after: timedelta) -> bool:
        """Mark a source as syncing unless another sync holds it; True when this call won.

        One conditional UPDATE, so of several replicas claiming at once exactly one
        wins. A claim older than ``stale_after`` belongs to a replica that died and is
        taken over.
        """
        now = self._clock()
        async with self._db.session() as session:
            result = await session.execute(
                update(KbSourceRow)
                .where(
                    KbSourceRow.id == source_id,
                    (KbSourceRow.status != "syncing")
                    | KbSourceRow.sync_started_at.is_(None)
                    | (KbSourceRow.sync_started_at < now - stale_after),
                )
                .values(status="syncing", sync_started_at=now)
            )
            await session.commit()
        return bool(getattr(result, "rowcount", 0))

    async def set_source_state(
        self, source_id: str, status: str, error: str | None, synced: bool = False
    ) -> None:
        """Record a source's sync status (and the time, when a sync finished)."""
        values: dict[str, Any] = {"status": status, "last_error": error}
        if synced:
            values["last_sync_at"] = self._clock()
        async with self._db.session() as session:
            await session.execute(
                update(KbSourceRow).where(KbSourceRow.id == source_id).values(**values)
            )
            await session.commit()

    async def delete_source(self, source_id: str) -> None:
        """Delete a source and its document records."""
        async with self._db.session() as session:
            await session.execute(delete(KbDocumentRow).where(KbDocumentRow.source_id == source_id))
            await session.execute(delete(KbSourceRow).where(KbSourceRow.id == source_id))
            await session.commit()

    # Documents -------------------------------------------------------------------------

    async def documents_of(self, source_id: str) -> dict[str, DocumentRecord]:
        """A source's documents by key."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(KbDocumentRow).where(KbDocumentRow.source_id == source_id)
            )
            return {row.key: _document(row) for row in rows}

    async def list_documents(
        self, kb_id: str, *, source_id: str | None = None, status: str | None = None
    ) -> builtins.list[DocumentRecord]:
        """A knowledge base's documents, optionally of one source or one status."""
        query = select(KbDocumentRow).where(KbDocumentRow.kb_id == kb_id)
        if source_id is not None:
            query = query.where(KbDocumentRow.source_id == source_id)
        if status is not None:
            query = query.where(KbDocumentRow.status == status)
        async with self._db.session() as session:
            rows = await session.scalars(query.order_by(KbDocumentRow.key))
            return [_document(row) for row in rows]

    async def save_document(self, record: DocumentRecord) -> None:
        """Insert or replace a document's record (by id)."""
        async with self._db.session() as session:
            await session.merge(KbDocumentRow(**_fields(record)))
            await session.commit()

    async def delete_documents(self, document_ids: Sequence[str]) -> None:
        """Forget these documents."""
        if not document_ids:
            return
        async with self._db.session() as session:
            await session.execute(
                delete(KbDocumentRow).where(KbDocumentRow.id.in_(list(document_ids)))
            )
            await session.commit()

    # Queries and feedback --------------------------------------------------------------

    async def record_query(
        self,
        kb_id: str,
        *,
        key_id: str | None,
        query: str,
        answer: str | None,
        retrieved: builtins.list[dict[str, Any]],
        query_vector: bytes | None,
    ) -> str:
        """Keep an answered query so feedback can refer to it; returns its id."""
        row = KbQueryRow(
            id=new_id("qry"),
            kb_id=kb_id,
            key_id=key_id,
            query=query,
            answer=answer,
            retrieved=retrieved,
            query_vector=query_vector,
            created_at=self._clock(),
        )
        async with self._db.session() as session:
            session.add(row)
            await session.commit()
        return row.id

    async def add_feedback(
        self,
        kb_id: str,
        query_id: str,
        *,
        key_id: str | None,
        rating: int | None,
        useful: builtins.list[str],
        not_useful: builtins.list[str],
        comment: str | None,
    ) -> tuple[str, FeedbackRecord]:
        """Store feedback on an answered query of ``kb_id``; 404 for an unknown query.

        Returns the feedback's id and the record the feedback model learns from.
        """
        async with self._db.session() as session:
            query = await session.get(KbQueryRow, query_id)
            if query is None or query.kb_id != kb_id:
                raise NotFoundError(f"no answered query {query_id!r} in this knowledge base")
            retrieved = {str(item["chunk_id"]) for item in query.retrieved}
            unknown = sorted((set(useful) | set(not_useful)) - retrieved)
            if unknown:
                msg = f"chunks {unknown} were not retrieved for this query"
                raise InvalidRequestError(msg, param="useful")
            row = KbFeedbackRow(
                id=new_id("fb"),
                kb_id=kb_id,
                query_id=query_id,
                key_id=key_id,
                rating=rating,
                useful=useful,
                not_useful=not_useful,
                comment=comment,
                created_at=self._clock(),
            )
            session.add(row)
            await session.commit()
            learned = FeedbackRecord(
                query_vector=query.query_vector,
                retrieved=list(query.retrieved),
                rating=rating,
                useful=list(useful),
                not_useful=list(not_useful),
            )
            return row.id, learned

    async def feedback(self, kb_id: str) -> builtins.list[FeedbackRecord]:
        """Every piece of feedback on ``kb_id`` with its query's vector and results."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(KbFeedbackRow, KbQueryRow)
                .join(KbQueryRow, KbQueryRow.id == KbFeedbackRow.query_id)
                .where(KbFeedbackRow.kb_id == kb_id)
                .order_by(KbFeedbackRow.created_at)
            )
            return [
                FeedbackRecord(
                    query_vector=query.query_vector,
                    retrieved=list(query.retrieved),
                    rating=feedback.rating,
                    useful=list(feedback.useful),
                    not_useful=list(feedback.not_useful),
                )
                for feedback, query in rows
            ]

    async def feedback_entries(self, kb_id: str, limit: int) -> builtins.list[FeedbackEntry]:
        """The latest ``limit`` pieces of feedback on ``kb_id``, newest first."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(KbFeedbackRow, KbQueryRow.query)
                .join(KbQueryRow, KbQueryRow.id == KbFeedbackRow.query_id)
                .where(KbFeedbackRow.kb_id == kb_id)
                .order_by(KbFeedbackRow.created_at.desc(), KbFeedbackRow.id.desc())
                .limit(limit)
            )
            return [
                FeedbackEntry(
                    id=row.id,
                    query_id=row.query_id,
                    query=query,
                    key_id=row.key_id,
                    rating=row.rating,
                    useful=list(row.useful),
                    not_useful=list(row.not_useful),
                    comment=row.comment,
                    created_at=row.created_at,
                )
                for row, query in rows
            ]


def _feedback_entry(row: KbFeedbackRow, query: str) -> FeedbackEntry:
    return FeedbackEntry(
        id=row.id, query_id=row.query_id, query=query, key_id=row.key_id, rating=row.rating,
        useful=list(row.useful), not_useful=list(row.not_useful), comment=row.comment,
        created_at=row.created_at,
    )  # fmt: skip


def _kb(row: KnowledgeBaseRow) -> KnowledgeBaseRecord:
    return KnowledgeBaseRecord(row.id, row.name, dict(row.spec), row.created_at, row.updated_at)


def _source(row: KbSourceRow) -> SourceRecord:
    return SourceRecord(
        id=row.id,
        kb_id=row.kb_id,
        name=row.name,
        spec=dict(row.spec),
        status=row.status,
        last_error=row.last_error,
        last_sync_at=row.last_sync_at,
        created_at=row.created_at,
    )


def _document(row: KbDocumentRow) -> DocumentRecord:
    return DocumentRecord(**{name: getattr(row, name) for name in DocumentRecord.__slots__})


def _fields(record: DocumentRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in DocumentRecord.__slots__}
