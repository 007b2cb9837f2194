"""The knowledge-base repository on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.store import Database
from atrium.store.knowledge import DocumentRecord, KnowledgeRepository

pytestmark = pytest.mark.integration


async def test_knowledge_bases_sources_and_documents_round_trip(database: Database) -> None:
    repo = KnowledgeRepository(database)
    kb = await repo.create_kb("research", {"description": "x"})
    assert (await repo.get_kb("research")).id == kb.id
    assert (await repo.get_kb(kb.id)).name == "research"
    with pytest.raises(InvalidRequestError):
        await repo.create_kb("research", {})
    source = await repo.add_source(kb.id, "notes", {"connector": {"kind": "folder"}})
    with pytest.raises(InvalidRequestError):
        await repo.add_source(kb.id, "notes", {})
    document = DocumentRecord(
        id="doc_1",
        kb_id=kb.id,
        source_id=source.id,
        key="a.md",
        content_hash="h1",
        status="indexed",
        reason=None,
        title="A",
        uri=None,
        doc_type="markdown",
        chunk_count=2,
        updated_at=datetime.now(UTC),
    )
    await repo.save_document(document)
    await repo.save_document(_replace(document, content_hash="h2"))
    stored = await repo.documents_of(source.id)
    assert stored["a.md"].content_hash == "h2"
    await repo.delete_kb(kb.id)
    assert await repo.find_kb("research") is None
    assert await repo.documents_of(source.id) == {}
    with pytest.raises(NotFoundError):
        await repo.get_source(kb.id, "notes")


def _replace(record: DocumentRecord, **changes: object) -> DocumentRecord:
    fields = {name: getattr(record, name) for name in DocumentRecord.__slots__}
    return DocumentRecord(**{**fields, **changes})  # type: ignore[arg-type]


async def test_exactly_one_of_concurrent_claims_wins(database: Database) -> None:
    repo = KnowledgeRepository(database)
    kb = await repo.create_kb("claims", {})
    source = await repo.add_source(kb.id, "s", {})
    results = await asyncio.gather(
        *(repo.claim_source(source.id, timedelta(hours=1)) for _ in range(8))
    )
    assert sorted(results) == [False] * 7 + [True]
    assert not await repo.claim_source(source.id, timedelta(hours=1))
    # A claim older than the stale limit is taken over; a finished sync frees the source.
    assert await repo.claim_source(source.id, timedelta(seconds=-1))
    await repo.set_source_state(source.id, "ok", None, synced=True)
    assert await repo.claim_source(source.id, timedelta(hours=1))


async def test_feedback_must_name_retrieved_chunks(database: Database) -> None:
    repo = KnowledgeRepository(database)
    kb = await repo.create_kb("fb", {})
    vector = np.ones(4, dtype="<f4").tobytes()
    query_id = await repo.record_query(
        kb.id,
        key_id=None,
        query="q",
        answer="a",
        retrieved=[{"chunk_id": "c1", "used": True}, {"chunk_id": "c2", "used": False}],
        query_vector=vector,
    )
    with pytest.raises(InvalidRequestError):
        await repo.add_feedback(
            kb.id, query_id, key_id=None, rating=1, useful=["c9"], not_useful=[], comment=None
        )
    other = await repo.create_kb("other", {})
    with pytest.raises(NotFoundError):
        await repo.add_feedback(
            other.id, query_id, key_id=None, rating=1, useful=[], not_useful=[], comment=None
        )
    _, learned = await repo.add_feedback(
        kb.id, query_id, key_id="k", rating=-1, useful=["c1"], not_useful=["c2"], comment="meh"
    )
    assert (learned.rating, learned.useful, learned.not_useful) == (-1, ["c1"], ["c2"])
    stored = await repo.feedback(kb.id)
    assert len(stored) == 1
    assert stored[0].query_vector == vector
    assert await repo.feedback(other.id) == []
