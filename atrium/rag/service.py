"""The RAG engine's service: knowledge bases, sources, syncs, queries, answers, feedback.

Routes (``atrium/api/knowledge.py``) parse a request, build a :class:`Caller` from the
verified key and call one method here. Chunks live in the :class:`ChunkIndex` (one
collection per knowledge base, named by its id); everything else in the relational store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from atrium.bus.base import Event
from atrium.bus.events import KnowledgeSynced
from atrium.core.errors import (
    AtriumError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from atrium.core.netguard import NetworkPolicy
from atrium.core.spans import SpanFactory, no_span
from atrium.observability.metrics import RagMetrics
from atrium.rag.answer import (
    ChatCaller,
    Citation,
    answer_text,
    build_messages,
    request_body,
    select_context,
    stream_deltas,
)
from atrium.rag.connectors import (
    SOURCE_SPECS,
    Connector,
    Documents,
    FolderSource,
    SecretGetter,
    SourceSpec,
    build_connector,
    safe_upload_path,
)
from atrium.rag.connectors.base import make_document
from atrium.rag.embedding import CatalogEmbedder, TextEmbedder
from atrium.rag.feedback import FeedbackModel
from atrium.rag.filters import FilterError, parse_filter
from atrium.rag.index.base import ChunkIndex, CollectionSpec
from atrium.rag.ingest import Ingestor, SyncProgress, SyncTarget
from atrium.rag.parsers import is_supported
from atrium.rag.requests import (
    Answer,
    Caller,
    FeedbackRequest,
    KnowledgeBaseCreate,
    PreparedChat,
    QueryRequest,
    SourceCreate,
)
from atrium.rag.rerank import HttpReranker
from atrium.rag.retrieval import HybridRetriever, RetrievalQuery, RetrievalResult, ScoredChunk
from atrium.rag.specs import KnowledgeBaseSpec
from atrium.rag.types import Scalar, SourceDocument
from atrium.runtime.catalog import ModelCatalog
from atrium.store.knowledge import (
    KnowledgeBaseRecord,
    KnowledgeRepository,
    SourceRecord,
)

logger = logging.getLogger("atrium.rag")

#: A sync claimed longer ago than this is taken to belong to a process that died.
SYNC_STALE_AFTER = timedelta(hours=2)

#: The source every knowledge base's uploads go to (a folder in the data directory).
UPLOADS_SOURCE = "uploads"


@dataclass(frozen=True, slots=True)
class RagConfig:
    """What the service needs from settings."""

    data_dir: Path
    max_document_bytes: int
    folder_roots: tuple[Path, ...]
    protected_paths: tuple[Path, ...]
    policy: NetworkPolicy
    context_tokens: int = 1200
    answer_max_tokens: int = 300


class KnowledgeService:
    """Everything the knowledge-base API does."""

    def __init__(
        self,
        *,
        repo: KnowledgeRepository,
        index: ChunkIndex,
        catalog: ModelCatalog,
        chat: ChatCaller,
        secrets: SecretGetter,
        feedback: FeedbackModel,
        count_tokens: Callable[[str], int],
        config: RagConfig,
        publish: Callable[[Event], object] | None = None,
        span: SpanFactory = no_span,
        metrics: RagMetrics | None = None,
    ) -> None:
        self._publish = publish
        self._metrics = metrics
        self._span = span
        self._repo = repo
        self._index = index
        self._catalog = catalog
        self._chat = chat
        self._secrets = secrets
        self._feedback = feedback
        self._count = count_tokens
        self._config = config
        self._ingestor = Ingestor(repo, index, count_tokens)
        self._embedders: dict[str, TextEmbedder] = {}
        self._sync_locks: dict[str, asyncio.Lock] = {}

    # Knowledge bases -------------------------------------------------------------------

    async def create(self, body: KnowledgeBaseCreate) -> dict[str, Any]:
        """Create a knowledge base and its index collection."""
        spec = KnowledgeBaseSpec.model_validate(body.model_dump(exclude={"name"}))
        embedder = self._embedder(spec.embedder)
        dimensions = int((await embedder.embed(["dimension probe"])).shape[1])
        record = await self._repo.create_kb(body.name, _spec_json(spec, dimensions))
        try:
            await self._index.create(CollectionSpec(record.id, dimensions, dict(spec.fields)))
        except Exception:
            await self._repo.delete_kb(record.id)
            raise
        return await self.describe(record.id)

    async def describe(self, id_or_name: str, caller: Caller | None = None) -> dict[str, Any]:
        """A knowledge base with its spec, sources and counts.

        A caller that is not an administrator must be in its access groups, and sees
        each source's name and sync state, not its configuration (paths, URLs, queries).
        """
        record = await self._repo.get_kb(id_or_name)
        if caller is not None:
            self._check_access(record, caller)
        sources = await self._repo.sources(record.id)
        public_sources = [_source_public(source) for source in sources]
        if caller is not None and caller.groups is not None:
            public_sources = [
                {key: item[key] for key in ("id", "name", "status", "last_sync_at")}
                for item in public_sources
            ]
        documents = await self._repo.list_documents(record.id)
        failed = sum(1 for document in documents if document.status == "failed")
        return {
            "id": record.id,
            "object": "knowledge_base",
            "name": record.name,
            **_spec(record).model_dump(mode="json"),
            "dimensions": record.spec.get("dimensions"),
            "sources": public_sources,
            "documents": len(documents),
            "failed_documents": failed,
            "chunks": await self._index.count(record.id),
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
        }

    async def list_all(self, caller: Caller | None = None) -> list[dict[str, Any]]:
        """The knowledge bases ``caller`` may query (every one for an administrator)."""
        records = [
            record
            for record in await self._repo.list_kbs()
            if caller is None or self._may_access(record, caller)
        ]
        return [
            {
                "id": record.id,
                "object": "knowledge_base",
                "name": record.name,
                "description": record.spec.get("description", ""),
                "embedder": record.spec.get("embedder"),
                "created_at": record.created_at.isoformat(),
            }
            for record in records
        ]

    async def update(self, id_or_name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a knowledge base's spec; the embedder and fields are fixed once created."""
        record = await self._repo.get_kb(id_or_name)
        current = _spec(record).model_dump(mode="json")
        for fixed in ("embedder", "fields", "chunking"):
            if fixed in changes and changes[fixed] != current[fixed]:
                msg = f"{fixed} cannot change once a knowledge base exists; create a new one"
                raise InvalidRequestError(msg, param=fixed)
        try:
            spec = KnowledgeBaseSpec.model_validate({**current, **changes})
        except ValidationError as exc:
            raise _invalid(exc) from None
        await self._repo.update_kb(record.id, _spec_json(spec, record.spec.get("dimensions")))
        return await self.describe(record.id)

    async def delete(self, id_or_name: str) -> None:
        """Delete a knowledge base: its chunks, uploads, sources, documents and feedback."""
        record = await self._repo.get_kb(id_or_name)
        await self._index.drop(record.id)
        await self._repo.delete_kb(record.id)
        self._feedback.forget(record.id)
        uploads = self._uploads_dir(record.id)
        if uploads.is_dir():
            await asyncio.to_thread(_remove_tree, uploads)

    # Sources and syncs -----------------------------------------------------------------

    async def add_source(self, id_or_name: str, body: SourceCreate) -> dict[str, Any]:
        """Add a source (checked by building its connector); it syncs on request."""
        record = await self._repo.get_kb(id_or_name)
        if body.name == UPLOADS_SOURCE:
            raise InvalidRequestError(f"{UPLOADS_SOURCE!r} is reserved", param="name")
        self._connector(body.connector)
        _check_metadata(_spec(record), body.metadata)
        source = await self._repo.add_source(record.id, body.name, body.model_dump(mode="json"))
        return _source_public(source)

    async def sources(self, id_or_name: str) -> list[dict[str, Any]]:
        """A knowledge base's sources with their sync state and document counts."""
        record = await self._repo.get_kb(id_or_name)
        documents = await self._repo.list_documents(record.id)
        result = []
        for source in await self._repo.sources(record.id):
            own = [d for d in documents if d.source_id == source.id]
            public = _source_public(source)
            public["documents"] = sum(1 for d in own if d.status == "indexed")
            public["failed_documents"] = sum(1 for d in own if d.status == "failed")
            result.append(public)
        return result

    async def delete_source(self, id_or_name: str, source: str) -> None:
        """Delete a source and every chunk of it from the index."""
        record = await self._repo.get_kb(id_or_name)
        found = await self._repo.get_source(record.id, source)
        async with self._lock(found.id):
            await self._index.delete_source(record.id, found.id)
            await self._repo.delete_source(found.id)

    async def documents(
        self, id_or_name: str, *, status: str | None = None, caller: Caller | None = None
    ) -> list[dict[str, Any]]:
        """A knowledge base's documents (optionally only failed or indexed ones)."""
        record = await self._repo.get_kb(id_or_name)
        if caller is not None:
            self._check_access(record, caller)
        return [
            {
                "id": d.id,
                "source_id": d.source_id,
                "key": d.key,
                "title": d.title,
                "status": d.status,
                "reason": d.reason,
                "doc_type": d.doc_type,
                "chunks": d.chunk_count,
                "uri": d.uri,
                "updated_at": d.updated_at.isoformat(),
            }
            for d in await self._repo.list_documents(record.id, status=status)
        ]

    async def sync(
        self,
        id_or_name: str,
        source: str,
        on_progress: Callable[[SyncProgress], None] | None = None,
    ) -> dict[str, Any]:
        """Sync one source now; returns the sync report."""
        record = await self._repo.get_kb(id_or_name)
        found = await self._repo.get_source(record.id, source)
        return (await self._sync(record, found, on_progress)).to_public()

    async def upload(self, id_or_name: str, filename: str, data: bytes) -> dict[str, Any]:
        """Store an uploaded file in the knowledge base's uploads folder, then index it."""
        record = await self._repo.get_kb(id_or_name)
        if len(data) > self._config.max_document_bytes:
            limit = self._config.max_document_bytes / 1_048_576
            msg = f"{filename!r} is {len(data) / 1_048_576:.1f} MB, over the {limit:g} MB limit"
            raise InvalidRequestError(msg, param="file", code="file_too_large")
        if not is_supported(filename):
            msg = (
                f"{filename!r}: unsupported file type (PDF, DOCX, HTML, Markdown, text, CSV, JSON)"
            )
            raise InvalidRequestError(msg, param="file", code="unsupported_file_type")
        folder = self._uploads_dir(record.id)
        path = safe_upload_path(folder, filename)
        staging = self._config.data_dir / "uploads" / ".staging"
        source = await self._uploads_source(record)
        async with self._lock(source.id):
            await asyncio.to_thread(_write_atomically, staging, path, data)
            # Only the uploaded file is indexed: a full sync of the folder would read
            # every earlier upload again.
            now = datetime.now(UTC)
            uploaded = make_document(path.name, data, path.name, created_at=now, updated_at=now)
            report = await self._ingestor.sync(
                self._target(record, source),
                _Listed([uploaded]),
                self._embedder(_spec(record).embedder),
                complete=False,
            )
            await self._repo.set_source_state(source.id, "ok", None, synced=True)
            self._announce(record, source, "ok", report)  # a failed upload counts too
        documents = await self._repo.documents_of(source.id)
        document = documents.get(path.name)
        if document is not None and document.status == "failed":
            # Kept (and listed as failed) until deleted or replaced by a readable version.
            msg = f"{path.name}: {document.reason}"
            raise InvalidRequestError(msg, param="file", code="document_failed")
        return {
            "filename": path.name,
            "document": None
            if document is None
            else {
                "id": document.id,
                "status": document.status,
                "reason": document.reason,
                "chunks": document.chunk_count,
            },
            "sync": report.to_public(),
        }

    async def delete_document(self, id_or_name: str, document_id: str) -> None:
        """Delete one uploaded document (file and chunks); other sources own their documents."""
        record = await self._repo.get_kb(id_or_name)
        documents = {d.id: d for d in await self._repo.list_documents(record.id)}
        document = documents.get(document_id)
        if document is None:
            raise NotFoundError(f"no document {document_id!r} in this knowledge base")
        source = await self._repo.get_source(record.id, document.source_id)
        if source.name != UPLOADS_SOURCE:
            msg = "only uploaded documents can be deleted; remove it at its source and re-sync"
            raise InvalidRequestError(msg, param="document_id")
        path = safe_upload_path(self._uploads_dir(record.id), document.key)
        async with self._lock(source.id):
            path.unlink(missing_ok=True)
            await self._index.replace_documents(record.id, [document.id], [])
            await self._repo.delete_documents([document.id])

    async def sync_due(self) -> int:
        """Sync every source whose interval has passed since its last sync; returns how many."""
        synced = 0
        now = datetime.now(UTC)
        for record in await self._repo.list_kbs():
            for source in await self._repo.sources(record.id):
                interval = source.spec.get("sync_interval_minutes")
                if not interval or self._lock(source.id).locked():
                    continue
                last = source.last_sync_at
                if last is None or now - last >= timedelta(minutes=float(interval)):
                    with contextlib.suppress(ConflictError):
                        await self._sync(record, source, None)
                        synced += 1
        return synced

    async def run_scheduler(self, every_seconds: float = 30.0) -> None:
        """Run :meth:`sync_due` forever (a background task of the platform)."""
        while True:
            try:
                await self.sync_due()
            except AtriumError as exc:
                logger.warning("scheduled sync failed: %s", exc.message)
            await asyncio.sleep(every_seconds)

    async def _sync(
        self,
        record: KnowledgeBaseRecord,
        source: SourceRecord,
        on_progress: Callable[[SyncProgress], None] | None,
    ) -> SyncProgress:
        spec = _spec(record)
        settings = SourceCreate.model_validate(source.spec)
        async with self._lock(source.id):
            if not await self._repo.claim_source(source.id, SYNC_STALE_AFTER):
                msg = f"source {source.name!r} is being synced by another process; try later"
                raise ConflictError(msg)
            progress = SyncProgress()
            try:
                connector = self._connector(settings.connector)
                target = self._target(record, source)
                embedder = self._embedder(spec.embedder)
                progress = await self._ingestor.sync(target, connector, embedder, on_progress)
            finally:
                status = "failed" if progress.error else "ok"
                await self._repo.set_source_state(source.id, status, progress.error, synced=True)
                self._announce(record, source, status, progress)
        logger.info(
            "source synced",
            extra={"kb": record.name, "source": source.name, **progress.to_public()},
        )
        return progress

    def _announce(
        self,
        record: KnowledgeBaseRecord,
        source: SourceRecord,
        status: str,
        progress: SyncProgress,
    ) -> None:
        """Publish the sync's outcome (alert rules count ingestion failures from it)."""
        if self._metrics is not None:
            indexed = progress.added + progress.updated
            self._metrics.synced(record.name, indexed, len(progress.failed))
        if self._publish is None:
            return
        self._publish(
            KnowledgeSynced(
                kb_id=record.id, knowledge_base=record.name, source_id=source.id,
                source=source.name, status=status, documents_seen=progress.seen,
                added=progress.added, updated=progress.updated, deleted=progress.deleted,
                failed_documents=len(progress.failed), error=progress.error,
                seconds=round(progress.seconds, 3),
            )
        )  # fmt: skip

    def _target(self, record: KnowledgeBaseRecord, source: SourceRecord) -> SyncTarget:
        spec = _spec(record)
        settings = SourceCreate.model_validate(source.spec)
        return SyncTarget(
            kb_id=record.id,
            collection=record.id,
            spec=spec,
            source_id=source.id,
            access_groups=tuple(settings.access_groups or spec.access_groups),
            static_metadata=dict(settings.metadata),
        )

    def _lock(self, source_id: str) -> asyncio.Lock:
        return self._sync_locks.setdefault(source_id, asyncio.Lock())

    async def _uploads_source(self, record: KnowledgeBaseRecord) -> SourceRecord:
        with contextlib.suppress(NotFoundError):
            return await self._repo.get_source(record.id, UPLOADS_SOURCE)
        folder = self._uploads_dir(record.id)
        spec = SourceCreate(
            name=UPLOADS_SOURCE, connector=FolderSource(path=str(folder), recursive=False)
        )
        try:
            return await self._repo.add_source(
                record.id, UPLOADS_SOURCE, spec.model_dump(mode="json")
            )
        except InvalidRequestError:
            # Another upload created it first.
            return await self._repo.get_source(record.id, UPLOADS_SOURCE)

    def _uploads_dir(self, kb_id: str) -> Path:
        folder = self._config.data_dir / "uploads" / kb_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _connector(self, spec: SourceSpec) -> Connector:
        return build_connector(
            spec,
            secrets=self._secrets,
            data_dir=self._config.data_dir,
            policy=self._config.policy,
            max_document_bytes=self._config.max_document_bytes,
            allowed_roots=(self._config.data_dir, *self._config.folder_roots),
            protected_paths=self._config.protected_paths,
        )

    def _embedder(self, model: str) -> TextEmbedder:
        embedder = self._embedders.get(model)
        if embedder is None:
            embedder = CatalogEmbedder(self._catalog, model)
            self._embedders[model] = embedder
        return embedder

    # Queries ---------------------------------------------------------------------------

    async def search(self, id_or_name: str, caller: Caller, body: QueryRequest) -> Answer:
        """Retrieval only: the chunks a query finds, as citations, with no answer."""
        record, _, result = await self._retrieve(id_or_name, caller, body)
        citations = self._citations(record, result.chunks)
        query_id = await self._remember(
            record, caller=caller, query=body.query, answer=None, citations=citations, result=result
        )
        return Answer(query_id, None, citations, result, kb_id=record.id)

    async def query(self, id_or_name: str, caller: Caller, body: QueryRequest) -> Answer:
        """Retrieve, then answer from the retrieved context with citations."""
        record, spec, result = await self._retrieve(id_or_name, caller, body)
        citations, request = self._prepare_answer(record, spec, caller, body, result, stream=False)
        with self._span(
            "rag.generate", **{"gen_ai.request.model": body.model or spec.answer_model}
        ):
            response = await self._chat.chat(caller.authorization, request)
        assert isinstance(response, dict)
        text = answer_text(response)
        query_id = await self._remember(
            record, caller=caller, query=body.query, answer=text, citations=citations, result=result
        )
        model = str(response.get("model") or body.model or spec.answer_model)
        return Answer(
            query_id, text, citations, result, model, record.id, usage=response.get("usage")
        )

    async def query_stream(
        self, id_or_name: str, caller: Caller, body: QueryRequest
    ) -> tuple[Answer, AsyncIterator[str]]:
        """Retrieve, open the answer stream; the caller relays deltas, then :meth:`finish`."""
        record, spec, result = await self._retrieve(id_or_name, caller, body)
        citations, request = self._prepare_answer(record, spec, caller, body, result, stream=True)
        with self._span(
            "rag.generate", **{"gen_ai.request.model": body.model or spec.answer_model}
        ):
            events = await self._chat.chat(caller.authorization, request)  # the stream opened
        assert not isinstance(events, dict)
        answer = Answer("", None, citations, result, body.model or spec.answer_model, record.id)
        return answer, stream_deltas(events)

    async def finish(self, answer: Answer, caller: Caller, query: str, text: str) -> str:
        """Record a streamed answer once it is complete; returns the query id."""
        record = await self._repo.get_kb(answer.kb_id)
        answer.answer = text
        answer.query_id = await self._remember(
            record,
            caller=caller,
            query=query,
            answer=text,
            citations=answer.citations,
            result=answer.retrieval,
        )
        return answer.query_id

    async def prepare_chat(
        self, id_or_name: str, caller: Caller, body: QueryRequest, stream: bool
    ) -> PreparedChat:
        """Retrieve for a ``rag/`` chat: the context message, answer model and citations."""
        record, spec, result = await self._retrieve(id_or_name, caller, body)
        citations, _ = self._prepare_answer(record, spec, caller, body, result, stream=stream)
        query_id = await self._remember(
            record, caller=caller, query=body.query, answer=None, citations=citations, result=result
        )
        system = build_messages(body.query, citations)[0]
        return PreparedChat(
            system_message=system,
            model=spec.answer_model,
            citations=[citation.to_public() for citation in citations],
            query_id=query_id,
            context=[
                {
                    "number": c.number,
                    "chunk_id": c.chunk.record.chunk_id,
                    "text": c.chunk.record.context,
                }
                for c in citations
            ],
        )

    async def feedback_entries(self, id_or_name: str, *, limit: int) -> list[dict[str, Any]]:
        """The latest feedback on a knowledge base with its questions (for administrators)."""
        record = await self._repo.get_kb(id_or_name)
        return [entry.to_public() for entry in await self._repo.feedback_entries(record.id, limit)]

    async def feedback(self, id_or_name: str, caller: Caller, body: FeedbackRequest) -> str:
        """Store feedback on an answered query and learn from it at once."""
        record = await self._repo.get_kb(id_or_name)
        self._check_access(record, caller)
        rating = {"up": 1, "down": -1}.get(body.rating or "")
        if rating is None and not body.useful and not body.not_useful:
            msg = "feedback needs a rating or chunks marked useful / not useful"
            raise InvalidRequestError(msg, param="rating")
        overlap = set(body.useful) & set(body.not_useful)
        if overlap:
            msg = f"chunks {sorted(overlap)} are marked both useful and not useful"
            raise InvalidRequestError(msg, param="useful")
        feedback_id, learned = await self._repo.add_feedback(
            record.id,
            body.query_id,
            key_id=caller.key_id,
            rating=rating,
            useful=list(body.useful),
            not_useful=list(body.not_useful),
            comment=body.comment,
        )
        if self._feedback.is_loaded(record.id):
            self._feedback.add(record.id, learned)
        return feedback_id

    async def _retrieve(
        self, id_or_name: str, caller: Caller, body: QueryRequest
    ) -> tuple[KnowledgeBaseRecord, KnowledgeBaseSpec, RetrievalResult]:
        record = await self._repo.get_kb(id_or_name)
        self._check_access(record, caller)
        spec = _spec(record)
        try:
            conditions = tuple(parse_filter(body.filter, spec.fields))
        except FilterError as exc:
            raise InvalidRequestError(str(exc), param="filter") from None
        await self._feedback.load(record.id, record.id)
        reranker = spec.retrieval.reranker
        retriever = HybridRetriever(
            self._index,
            self._embedder(spec.embedder),
            feedback=self._feedback,
            reranker=None
            if reranker is None
            else HttpReranker(reranker, self._config.policy, self._secrets),
            span=self._span,
        )
        query = RetrievalQuery(
            text=body.query,
            top_k=body.top_k,
            mode=body.mode,
            conditions=conditions,
            groups=caller.groups,
        )
        started = time.perf_counter()
        try:
            with self._span("rag.retrieve", **{"rag.knowledge_base": record.name}):
                result = await retriever.retrieve(record.id, spec, query)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="filter") from None
        if self._metrics is not None:
            mode = body.mode or spec.retrieval.mode
            self._metrics.retrieved(record.name, mode, time.perf_counter() - started)
        return record, spec, result

    def _prepare_answer(
        self,
        record: KnowledgeBaseRecord,
        spec: KnowledgeBaseSpec,
        caller: Caller,
        body: QueryRequest,
        result: RetrievalResult,
        *,
        stream: bool,
    ) -> tuple[list[Citation], bytes]:
        chosen = select_context(result.chunks, self._count, self._config.context_tokens)
        citations = self._citations(record, chosen)
        request = request_body(
            body.model or spec.answer_model,
            build_messages(body.query, citations),
            max_tokens=body.max_tokens or self._config.answer_max_tokens,
            stream=stream,
            user=caller.user,
        )
        return citations, request

    def _citations(self, record: KnowledgeBaseRecord, chunks: list[ScoredChunk]) -> list[Citation]:
        return [
            Citation(
                number,
                chunk,
                f"/v1/knowledge-bases/{record.id}/documents/{chunk.record.document_id}",
            )
            for number, chunk in enumerate(chunks, start=1)
        ]

    async def _remember(
        self,
        record: KnowledgeBaseRecord,
        *,
        caller: Caller,
        query: str,
        answer: str | None,
        citations: list[Citation],
        result: RetrievalResult,
    ) -> str:
        used = {citation.chunk.record.chunk_id for citation in citations}
        retrieved = [
            {
                "chunk_id": chunk.record.chunk_id,
                "document_id": chunk.record.document_id,
                "score": round(chunk.score, 6),
                "used": chunk.record.chunk_id in used,
            }
            for chunk in result.chunks
        ]
        vector = result.query_vector
        return await self._repo.record_query(
            record.id,
            key_id=caller.key_id,
            query=query,
            answer=answer,
            retrieved=retrieved,
            query_vector=None if vector is None else vector.astype("<f4").tobytes(),
        )

    def _may_access(self, record: KnowledgeBaseRecord, caller: Caller) -> bool:
        groups = _spec(record).access_groups
        return caller.groups is None or not groups or not caller.groups.isdisjoint(groups)

    def _check_access(self, record: KnowledgeBaseRecord, caller: Caller) -> None:
        if not self._may_access(record, caller):
            msg = f"this API key is in none of the access groups of knowledge base {record.name!r}"
            raise PermissionDeniedError(msg)


def _spec(record: KnowledgeBaseRecord) -> KnowledgeBaseSpec:
    stored = {k: v for k, v in record.spec.items() if k != "dimensions"}
    return KnowledgeBaseSpec.model_validate(stored)


def _spec_json(spec: KnowledgeBaseSpec, dimensions: object) -> dict[str, Any]:
    return {**spec.model_dump(mode="json"), "dimensions": dimensions}


def _source_public(source: SourceRecord) -> dict[str, Any]:
    spec = SOURCE_SPECS.dump_python(
        SOURCE_SPECS.validate_python(source.spec["connector"]), mode="json"
    )
    return {
        "id": source.id,
        "object": "knowledge_base.source",
        "name": source.name,
        "connector": spec,
        "access_groups": source.spec.get("access_groups"),
        "sync_interval_minutes": source.spec.get("sync_interval_minutes"),
        "status": source.status,
        "last_error": source.last_error,
        "last_sync_at": source.last_sync_at.isoformat() if source.last_sync_at else None,
    }


def _check_metadata(spec: KnowledgeBaseSpec, metadata: Mapping[str, Scalar]) -> None:
    raw = dict(metadata)
    try:
        parse_filter(raw, spec.fields)
    except FilterError as exc:
        raise InvalidRequestError(str(exc), param="metadata") from None


def _invalid(exc: ValidationError) -> InvalidRequestError:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return InvalidRequestError(f"{where}: {error['msg']}", param=where or None)


class _Listed:
    """A connector over documents already in hand (an upload)."""

    def __init__(self, documents: list[SourceDocument]) -> None:
        self._documents = documents

    async def documents(self) -> Documents:
        for document in self._documents:
            yield document


def _write_atomically(staging: Path, path: Path, data: bytes) -> None:
    """Write next to, not inside, the uploads folder, so a sync never reads half a file."""
    staging.mkdir(parents=True, exist_ok=True)
    partial = staging / f"{uuid.uuid4().hex}.partial"
    partial.write_bytes(data)
    partial.replace(path)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
