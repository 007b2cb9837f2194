"""Hybrid retrieval: dense + lexical search, fused, re-scored by rules and feedback, diversified.

The order of work for one query:

1. embed the query (when a dense search, feedback or MMR needs the vector);
2. run the dense and the lexical search concurrently, each with the caller's scope
   (filters, excluded documents, access groups) applied inside the index query;
3. fuse: a convex combination of z-normalised scores (default) or reciprocal rank
   fusion. Lexical-only candidates get their exact cosine similarity from their stored
   vector, so the dense side of the combination is never a guess;
4. map the fused scores into (0, 1], then apply business rules (boosts, recency decay)
   and boosts learned from feedback; pinned documents go first;
5. optionally rerank the head with a ``/rerank`` endpoint, then pick ``top_k`` with MMR.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from atrium.core.spans import SpanFactory, no_span
from atrium.rag.embedding import TextEmbedder
from atrium.rag.filters import field_value, matches, parse_filter
from atrium.rag.index.base import ChunkIndex
from atrium.rag.specs import KnowledgeBaseSpec, RetrievalSpec, RulesSpec
from atrium.rag.types import ChunkRecord, Condition, Hit, Op, SearchScope

Mode = Literal["hybrid", "dense", "lexical"]


@dataclass(frozen=True, slots=True)
class RetrievalQuery:
    """One search: the text, how many chunks, and what the caller may see."""

    text: str
    top_k: int | None = None
    mode: Mode | None = None
    conditions: tuple[Condition, ...] = ()
    groups: frozenset[str] | None = None


@dataclass(slots=True)
class ScoredChunk:
    """A retrieved chunk with its final score and the scores it came from."""

    record: ChunkRecord
    score: float
    dense: float | None = None
    lexical: float | None = None
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class RetrievalResult:
    """The chunks found, best first, and the query's vector (kept for feedback)."""

    chunks: list[ScoredChunk]
    query_vector: npt.NDArray[np.float32] | None
    timings_ms: dict[str, float] = field(default_factory=dict)


class Reranker(Protocol):
    """Re-orders passages for a query: ``(index into documents, relevance)`` best first."""

    async def rerank(self, query: str, documents: list[str]) -> list[tuple[int, float]]:
        """Scores for ``documents`` (any subset, best first)."""
        ...


class FeedbackSignals(Protocol):
    """Boosts in [-1, 1] per chunk id, learned from feedback on similar past queries."""

    def boosts(self, collection: str, vector: npt.NDArray[np.float32]) -> dict[str, float]:
        """Chunk id -> boost for a query with this vector."""
        ...


class HybridRetriever:
    """Runs :class:`RetrievalQuery` against one knowledge base's collection."""

    def __init__(
        self,
        index: ChunkIndex,
        embedder: TextEmbedder,
        *,
        feedback: FeedbackSignals | None = None,
        reranker: Reranker | None = None,
        span: SpanFactory = no_span,
    ) -> None:
        self._span = span
        self._index = index
        self._embedder = embedder
        self._feedback = feedback
        self._reranker = reranker

    async def retrieve(
        self, collection: str, spec: KnowledgeBaseSpec, query: RetrievalQuery
    ) -> RetrievalResult:
        """The best chunks for ``query``, best first, at most ``top_k``."""
        settings = spec.retrieval
        mode = query.mode or settings.mode
        top_k = query.top_k or settings.top_k
        timings: dict[str, float] = {}
        clock = _Clock(timings)
        vector = None
        if mode != "lexical" or settings.mmr_lambda is not None or self._wants_feedback(settings):
            with self._span("rag.embed", **{"gen_ai.request.model": spec.embedder}):
                vector = (await self._embedder.embed([query.text]))[0]
            clock.lap("embed")
        scope = _scope(query, spec.rules)
        with self._span("rag.search", **{"rag.mode": mode, "rag.top_k": top_k}):
            dense, lexical = await self._search(
                collection, mode, text=query.text, vector=vector, scope=scope, settings=settings
            )
        clock.lap("search")
        fused = fuse(dense, lexical, vector, settings)
        _apply_rules(fused, spec)
        if vector is not None and self._wants_feedback(settings):
            await self._apply_feedback(collection, fused, vector, scope, settings)
        ranked = sorted(fused.values(), key=lambda chunk: -chunk.score)
        ranked = await self._pin(collection, ranked, vector, query, spec) + ranked
        ranked = _dedupe(ranked)
        if self._reranker is not None and settings.reranker is not None:
            with self._span("rag.rerank", **{"rag.candidates": settings.reranker.candidates}):
                ranked = await self._rerank(query.text, ranked, settings.reranker.candidates)
        clock.lap("rank")
        if settings.mmr_lambda is not None and vector is not None:
            chosen = mmr(ranked, vector, top_k, settings.mmr_lambda)
        else:
            chosen = ranked[:top_k]
        return RetrievalResult(chunks=chosen, query_vector=vector, timings_ms=timings)

    def _wants_feedback(self, settings: RetrievalSpec) -> bool:
        return self._feedback is not None and settings.feedback_weight > 0

    async def _search(
        self,
        collection: str,
        mode: Mode,
        *,
        text: str,
        vector: npt.NDArray[np.float32] | None,
        scope: SearchScope,
        settings: RetrievalSpec,
    ) -> tuple[list[Hit], list[Hit]]:
        k = settings.candidates
        dense_call = (
            self._index.dense(collection, vector, k, scope)
            if mode != "lexical" and vector is not None
            else _nothing()
        )
        lexical_call = (
            self._index.lexical(collection, text, k, scope) if mode != "dense" else _nothing()
        )
        dense, lexical = await asyncio.gather(dense_call, lexical_call)
        return dense, lexical

    async def _apply_feedback(
        self,
        collection: str,
        fused: dict[str, ScoredChunk],
        vector: npt.NDArray[np.float32],
        scope: SearchScope,
        settings: RetrievalSpec,
    ) -> None:
        assert self._feedback is not None
        boosts = self._feedback.boosts(collection, vector)
        if not boosts:
            return
        missing = [cid for cid, boost in boosts.items() if boost > 0 and cid not in fused]
        if missing:
            # Chunks confirmed useful on similar queries join the candidates, but only
            # through a scoped search: feedback never widens what a caller may see.
            await self._add_confirmed(collection, fused, vector, scope, missing)
        for chunk_id, boost in boosts.items():
            chunk = fused.get(chunk_id)
            if chunk is not None and not chunk.pinned:
                chunk.score += settings.feedback_weight * boost

    async def _add_confirmed(
        self,
        collection: str,
        fused: dict[str, ScoredChunk],
        vector: npt.NDArray[np.float32],
        scope: SearchScope,
        chunk_ids: list[str],
    ) -> None:
        records = await self._index.get(collection, chunk_ids)
        documents = tuple(sorted({record.document_id for record in records}))
        if not documents:
            return
        narrowed = replace(
            scope, conditions=(*scope.conditions, Condition("document_id", Op.IN, documents))
        )
        hits = await self._index.dense(collection, vector, len(chunk_ids) * 4, narrowed)
        floor = min((chunk.score for chunk in fused.values()), default=0.0)
        wanted = set(chunk_ids)
        for hit in hits:
            if hit.record.chunk_id in wanted and hit.record.chunk_id not in fused:
                fused[hit.record.chunk_id] = ScoredChunk(hit.record, floor, dense=hit.score)

    async def _pin(
        self,
        collection: str,
        ranked: list[ScoredChunk],
        vector: npt.NDArray[np.float32] | None,
        query: RetrievalQuery,
        spec: KnowledgeBaseSpec,
    ) -> list[ScoredChunk]:
        pinned = tuple(spec.rules.pinned)
        if not pinned:
            return []
        top = ranked[0].score if ranked else 1.0
        scope = _scope(query, spec.rules)
        narrowed = replace(
            scope, conditions=(*scope.conditions, Condition("document_id", Op.IN, pinned))
        )
        if vector is not None:
            hits = await self._index.dense(collection, vector, len(pinned) * 4, narrowed)
        else:
            hits = await self._index.lexical(collection, query.text, len(pinned) * 4, narrowed)
        best: dict[str, Hit] = {}
        for hit in hits:
            best.setdefault(hit.record.document_id, hit)
        order = {doc: position for position, doc in enumerate(pinned)}
        chosen = sorted(best.values(), key=lambda hit: order[hit.record.document_id])
        return [
            ScoredChunk(hit.record, top + len(chosen) - i, dense=hit.score, pinned=True)
            for i, hit in enumerate(chosen)
        ]

    async def _rerank(self, text: str, ranked: list[ScoredChunk], head: int) -> list[ScoredChunk]:
        assert self._reranker is not None
        candidates = [chunk for chunk in ranked[:head] if not chunk.pinned]
        pinned = [chunk for chunk in ranked[:head] if chunk.pinned]
        order = await self._reranker.rerank(text, [chunk.record.text for chunk in candidates])
        reranked = []
        for index, relevance in order:
            chunk = candidates[index]
            chunk.score = relevance
            reranked.append(chunk)
        seen = {id(chunk) for chunk in reranked}
        rest = [chunk for chunk in candidates if id(chunk) not in seen]
        return pinned + reranked + rest + ranked[head:]


async def _nothing() -> list[Hit]:
    return []


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self._timings = timings
        self._last = asyncio.get_running_loop().time()

    def lap(self, name: str) -> None:
        now = asyncio.get_running_loop().time()
        self._timings[name] = round((now - self._last) * 1000, 3)
        self._last = now


def _scope(query: RetrievalQuery, rules: RulesSpec) -> SearchScope:
    conditions = list(query.conditions)
    if rules.excluded:
        conditions.append(Condition("document_id", Op.NIN, tuple(rules.excluded)))
    return SearchScope(conditions=tuple(conditions), groups=query.groups)


def _zscores(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std())
    return float(array.mean()), std if std > 1e-9 else 1.0


def fuse(
    dense: list[Hit],
    lexical: list[Hit],
    vector: npt.NDArray[np.float32] | None,
    settings: RetrievalSpec,
) -> dict[str, ScoredChunk]:
    """Fuse the two hit lists into chunks scored in (0, 1].

    Weighted fusion maps the combined z-score through the logistic function (0.5 is an
    average candidate); RRF is divided by its largest possible value. Either way scores
    stay comparable across queries, so a rule's factor or a feedback boost means the
    same thing whatever the query.
    """
    chunks: dict[str, ScoredChunk] = {}
    for hit in dense:
        chunks[hit.record.chunk_id] = ScoredChunk(hit.record, 0.0, dense=hit.score)
    for hit in lexical:
        chunk = chunks.setdefault(hit.record.chunk_id, ScoredChunk(hit.record, 0.0))
        chunk.lexical = hit.score
    if not chunks:
        return chunks
    if settings.fusion == "rrf" or not dense or not lexical:
        _rrf(chunks, dense, lexical, settings.rrf_k)
        best = (int(bool(dense)) + int(bool(lexical))) / (settings.rrf_k + 1)
        for chunk in chunks.values():
            chunk.score /= best
    else:
        _weighted(chunks, dense, lexical, vector, settings.dense_weight)
        for chunk in chunks.values():
            chunk.score = 1.0 / (1.0 + math.exp(-chunk.score))
    return chunks


def _rrf(chunks: dict[str, ScoredChunk], dense: list[Hit], lexical: list[Hit], k: int) -> None:
    for hits in (dense, lexical):
        for rank, hit in enumerate(hits):
            chunks[hit.record.chunk_id].score += 1.0 / (k + rank + 1)


def _weighted(
    chunks: dict[str, ScoredChunk],
    dense: list[Hit],
    lexical: list[Hit],
    vector: npt.NDArray[np.float32] | None,
    weight: float,
) -> None:
    dense_mean, dense_std = _zscores([hit.score for hit in dense])
    lexical_mean, lexical_std = _zscores([hit.score for hit in lexical])
    lexical_floor = min(hit.score for hit in lexical)
    dense_floor = min(hit.score for hit in dense)
    for chunk in chunks.values():
        if chunk.dense is None and vector is not None:
            # The stored vector gives the exact similarity of a lexical-only candidate.
            chunk.dense = float(np.dot(chunk.record.vector, vector))
        dense_score = chunk.dense if chunk.dense is not None else dense_floor
        lexical_score = chunk.lexical if chunk.lexical is not None else lexical_floor
        chunk.score = (
            weight * (dense_score - dense_mean) / dense_std
            + (1 - weight) * (lexical_score - lexical_mean) / lexical_std
        )


def _apply_rules(chunks: dict[str, ScoredChunk], spec: KnowledgeBaseSpec) -> None:
    rules = spec.rules
    if not rules.boosts and rules.recency is None:
        return
    boosts = [(parse_filter(rule.when, spec.fields), rule.factor) for rule in rules.boosts]
    now = datetime.now(UTC)
    for chunk in chunks.values():
        for conditions, factor in boosts:
            if matches(chunk.record, conditions):
                chunk.score *= factor
        if rules.recency is not None:
            chunk.score *= _decay(chunk.record, rules.recency.field, now, rules)


def _decay(record: ChunkRecord, name: str, now: datetime, rules: RulesSpec) -> float:
    assert rules.recency is not None
    when = field_value(record, name)
    if not isinstance(when, datetime):
        return 1.0 - rules.recency.weight
    age_days = max((now - when).total_seconds() / 86_400, 0.0)
    decay = math.pow(0.5, age_days / rules.recency.half_life_days)
    return (1.0 - rules.recency.weight) + rules.recency.weight * decay


def _dedupe(ranked: list[ScoredChunk]) -> list[ScoredChunk]:
    seen: set[str] = set()
    unique = []
    for chunk in ranked:
        if chunk.record.chunk_id not in seen:
            seen.add(chunk.record.chunk_id)
            unique.append(chunk)
    return unique


def mmr(
    ranked: list[ScoredChunk], vector: npt.NDArray[np.float32], k: int, trade_off: float
) -> list[ScoredChunk]:
    """Maximal marginal relevance over ``ranked``: relevance against redundancy.

    Relevance is the chunk's final score (rules and feedback included), so MMR only
    re-orders; ``trade_off=1`` keeps the ranking as it is. Pinned chunks stay first.
    """
    chosen = [chunk for chunk in ranked if chunk.pinned][:k]
    pool = [chunk for chunk in ranked if not chunk.pinned][: max(k * 5, 20)]
    if not pool or len(chosen) >= k:
        return chosen
    matrix = np.stack([chunk.record.vector for chunk in pool])
    relevance = np.asarray([chunk.score for chunk in pool])
    redundancy = np.full(len(pool), -1.0)
    for chunk in chosen:
        redundancy = np.maximum(redundancy, matrix @ chunk.record.vector)
    taken = np.zeros(len(pool), dtype=bool)
    while len(chosen) < k and not taken.all():
        value = trade_off * relevance - (1 - trade_off) * np.where(redundancy < -0.5, 0, redundancy)
        value[taken] = -np.inf
        best = int(np.argmax(value))
        taken[best] = True
        chosen.append(pool[best])
        redundancy = np.maximum(redundancy, matrix @ matrix[best])
    return chosen
