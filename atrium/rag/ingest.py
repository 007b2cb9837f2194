"""Syncing a source into a knowledge base: incremental, per-document atomic, failure-tolerant.

For each document a connector yields, the pipeline compares its content hash with the
stored one: unchanged documents are skipped; new and changed ones are parsed, chunked,
embedded and written to the index in one atomic replace per batch of documents; a
document that cannot be read or parsed is recorded as failed with the reason and has no
chunks in the index (a failed new version never leaves the old one half-replaced).
Documents the source no longer has are deleted, but only when the connector enumerated
the whole source: after a :class:`ConnectorError` nothing unseen is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from atrium.rag.chunking import chunk_document
from atrium.rag.connectors.base import Connector, ConnectorError, DocumentFailure
from atrium.rag.embedding import TextEmbedder
from atrium.rag.filters import FilterError, coerce
from atrium.rag.index.base import ChunkIndex
from atrium.rag.parsers import ParseError, parse_document
from atrium.rag.specs import KnowledgeBaseSpec
from atrium.rag.types import Chunk, ChunkRecord, ParsedDocument, Scalar, SourceDocument
from atrium.store.knowledge import DocumentRecord, KnowledgeRepository, new_id

#: Chunks embedded and indexed together: large enough to batch the embedder well.
BATCH_CHUNKS = 128


@dataclass(slots=True)
class SyncProgress:
    """Counts so far, for progress bars and the API's sync report."""

    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def to_public(self) -> dict[str, object]:
        """A JSON-safe view."""
        return {
            "documents_seen": self.seen,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "chunks_indexed": self.chunks,
            "failed": [{"key": key, "reason": reason} for key, reason in self.failed],
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Pending:
    """A parsed, chunked document waiting for its batch to be embedded and indexed."""

    record: DocumentRecord
    chunks: list[Chunk]
    source: SourceDocument
    texts: list[str]
    is_new: bool


@dataclass(frozen=True, slots=True)
class SyncTarget:
    """Where a sync writes: the knowledge base, its spec, the source and its groups."""

    kb_id: str
    collection: str
    spec: KnowledgeBaseSpec
    source_id: str
    access_groups: tuple[str, ...]
    static_metadata: dict[str, Scalar] = field(default_factory=dict)


class Ingestor:
    """Runs syncs: connector -> parser -> chunker -> embedder -> index, with records kept."""

    def __init__(
        self,
        repo: KnowledgeRepository,
        index: ChunkIndex,
        count_tokens: Callable[[str], int],
        *,
        batch_chunks: int = BATCH_CHUNKS,
    ) -> None:
        self._repo = repo
        self._index = index
        self._count = count_tokens
        self._batch_chunks = batch_chunks

    async def sync(
        self,
        target: SyncTarget,
        connector: Connector,
        embedder: TextEmbedder,
        on_progress: Callable[[SyncProgress], None] | None = None,
        *,
        complete: bool = True,
    ) -> SyncProgress:
        """Sync one source; returns what happened. Never raises for a document's failure.

        ``complete=False`` says the connector lists only some of the source's documents
        (one uploaded file): then nothing it did not list is deleted.
        """
        started = time.perf_counter()
        progress = SyncProgress()
        existing = await self._repo.documents_of(target.source_id)
        seen: set[str] = set()
        batch: list[_Pending] = []
        try:
            async with contextlib.aclosing(connector.documents()) as documents:
                async for item in documents:
                    progress.seen += 1
                    seen.add(item.key)
                    pending = await self._prepare(target, item, existing.get(item.key), progress)
                    if pending is not None:
                        batch.append(pending)
                    if sum(len(p.chunks) for p in batch) >= self._batch_chunks:
                        await self._flush(target, batch, embedder, progress)
                        batch = []
                    _report(on_progress, progress, started)
            await self._flush(target, batch, embedder, progress)
            if complete:
                await self._delete_missing(target, existing, seen, progress)
        except ConnectorError as exc:
            await self._flush(target, batch, embedder, progress)
            progress.error = exc.message
        progress.seconds = time.perf_counter() - started
        _report(on_progress, progress, started)
        return progress

    async def _prepare(
        self,
        target: SyncTarget,
        item: SourceDocument | DocumentFailure,
        old: DocumentRecord | None,
        progress: SyncProgress,
    ) -> _Pending | None:
        if isinstance(item, DocumentFailure):
            await self._fail(target, item.key, item.reason, old, progress)
            return None
        if old is not None and old.status == "indexed" and old.content_hash == item.content_hash:
            progress.unchanged += 1
            return None
        try:
            parsed, chunks = await asyncio.to_thread(self._parse_and_chunk, item, target.spec)
        except ParseError as exc:
            await self._fail(target, item.key, exc.reason, old, progress, item=item)
            return None
        record = DocumentRecord(
            id=old.id if old is not None else new_id("doc"),
            kb_id=target.kb_id,
            source_id=target.source_id,
            key=item.key,
            content_hash=item.content_hash,
            status="indexed",
            reason=None,
            title=_title(item, parsed)[:500],
            uri=item.uri,
            doc_type=parsed.doc_type,
            chunk_count=len(chunks),
            updated_at=datetime.now(UTC),
        )
        title = record.title or ""
        texts = [_matched_text(title, chunk) for chunk in chunks]
        return _Pending(record, chunks, item, texts, is_new=old is None)

    def _parse_and_chunk(
        self, item: SourceDocument, spec: KnowledgeBaseSpec
    ) -> tuple[ParsedDocument, list[Chunk]]:
        parsed = parse_document(item.data, item.filename, item.media_type)
        return parsed, chunk_document(parsed, spec.chunking, self._count)

    async def _flush(
        self,
        target: SyncTarget,
        batch: Sequence[_Pending],
        embedder: TextEmbedder,
        progress: SyncProgress,
    ) -> None:
        if not batch:
            return
        texts = [text for pending in batch for text in pending.texts]
        vectors = await embedder.embed(texts) if texts else None
        records: list[ChunkRecord] = []
        offset = 0
        for pending in batch:
            for chunk, text in zip(pending.chunks, pending.texts, strict=True):
                assert vectors is not None
                records.append(_chunk_record(target, pending, chunk, text, vectors[offset]))
                offset += 1
        await self._index.replace_documents(
            target.collection, [pending.record.id for pending in batch], records
        )
        for pending in batch:
            await self._repo.save_document(pending.record)
            if pending.is_new:
                progress.added += 1
            else:
                progress.updated += 1
        progress.chunks += len(records)

    async def _fail(
        self,
        target: SyncTarget,
        key: str,
        reason: str,
        old: DocumentRecord | None,
        progress: SyncProgress,
        *,
        item: SourceDocument | None = None,
    ) -> None:
        progress.failed.append((key, reason))
        record = DocumentRecord(
            id=old.id if old is not None else new_id("doc"),
            kb_id=target.kb_id,
            source_id=target.source_id,
            key=key,
            content_hash=item.content_hash if item is not None else "",
            status="failed",
            reason=reason,
            title=(item.title if item is not None else None) or key[:500],
            uri=item.uri if item is not None else None,
            doc_type=None,
            chunk_count=0,
            updated_at=datetime.now(UTC),
        )
        if old is not None and old.chunk_count:
            await self._index.replace_documents(target.collection, [old.id], [])
        await self._repo.save_document(record)

    async def _delete_missing(
        self,
        target: SyncTarget,
        existing: dict[str, DocumentRecord],
        seen: set[str],
        progress: SyncProgress,
    ) -> None:
        gone = [record.id for key, record in existing.items() if key not in seen]
        if not gone:
            return
        await self._index.replace_documents(target.collection, gone, [])
        await self._repo.delete_documents(gone)
        progress.deleted += len(gone)


def _report(
    on_progress: Callable[[SyncProgress], None] | None, progress: SyncProgress, started: float
) -> None:
    if on_progress is not None:
        progress.seconds = time.perf_counter() - started
        on_progress(progress)


def _title(item: SourceDocument, parsed: ParsedDocument) -> str:
    return item.title or parsed.title or item.filename


def _matched_text(title: str, chunk: Chunk) -> str:
    """What is embedded and lexically indexed: the chunk under its document's title."""
    if title and not chunk.text.startswith(title):
        return f"{title}\n{chunk.text}"
    return chunk.text


def _chunk_record(
    target: SyncTarget,
    pending: _Pending,
    chunk: Chunk,
    text: str,
    vector: npt.NDArray[np.float32],
) -> ChunkRecord:
    item = pending.source
    return ChunkRecord(
        chunk_id=f"{pending.record.id}:{chunk.ordinal}",
        document_id=pending.record.id,
        source_id=target.source_id,
        ordinal=chunk.ordinal,
        text=text,
        context=chunk.context if chunk.context != chunk.text else text,
        title=pending.record.title or "",
        doc_type=pending.record.doc_type or "",
        vector=np.asarray(vector, dtype=np.float32),
        section=chunk.section,
        page=chunk.page,
        uri=item.uri,
        created_at=item.created_at,
        updated_at=item.updated_at or pending.record.updated_at,
        access_groups=target.access_groups,
        metadata=_metadata(target, item),
    )


def _metadata(target: SyncTarget, item: SourceDocument) -> dict[str, Scalar]:
    """The document's values of the knowledge base's declared fields, typed; others dropped."""
    values: dict[str, Scalar] = {}
    merged = {**target.static_metadata, **item.metadata}
    for name, kind in target.spec.fields.items():
        if name in merged:
            with contextlib.suppress(FilterError):
                values[name] = coerce(name, kind, merged[name])
    return values
