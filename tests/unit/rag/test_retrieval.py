"""Fusion, MMR, metadata filters and the feedback model: the retriever's pure parts."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from atrium.rag.feedback import FeedbackModel
from atrium.rag.filters import FilterError, matches, parse_filter
from atrium.rag.retrieval import ScoredChunk, fuse, mmr
from atrium.rag.specs import KnowledgeBaseSpec, RetrievalSpec
from atrium.rag.types import ChunkRecord, Condition, Hit, Op
from atrium.store.knowledge import FeedbackRecord


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _record(chunk_id: str, vector: np.ndarray, **fields: object) -> ChunkRecord:
    metadata = fields.pop("metadata", {})
    return ChunkRecord(
        chunk_id=chunk_id,
        document_id=f"doc-{chunk_id}",
        source_id="src",
        ordinal=0,
        text=chunk_id,
        context=chunk_id,
        title=chunk_id,
        doc_type="text",
        vector=vector,
        metadata=metadata,  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


QUERY = _unit(1, 0, 0)


def test_weighted_fusion_favours_chunks_both_searches_found() -> None:
    both = _record("both", _unit(1, 0.2, 0))
    dense_only = _record("dense", _unit(1, 0.1, 0))
    lexical_only = _record("lexical", _unit(0.5, 1, 0))
    weak = _record("weak", _unit(0.3, 1, 0))
    fused = fuse(
        [Hit(dense_only, 0.99), Hit(both, 0.97), Hit(weak, 0.3)],
        [Hit(both, 12.0), Hit(lexical_only, 11.0), Hit(weak, 2.0)],
        QUERY,
        RetrievalSpec(),
    )
    ranked = sorted(fused.values(), key=lambda chunk: -chunk.score)
    assert ranked[0].record.chunk_id == "both"
    assert all(0 < chunk.score < 1 for chunk in ranked)
    # A lexical-only candidate gets its exact cosine similarity, not a guess.
    assert fused["lexical"].dense == pytest.approx(float(np.dot(lexical_only.vector, QUERY)))


def test_the_dense_weight_decides_between_disagreeing_searches() -> None:
    a, b = _record("a", _unit(1, 0, 0)), _record("b", _unit(0.5, 1, 0))
    dense, lexical = [Hit(a, 0.9), Hit(b, 0.1)], [Hit(b, 9.0), Hit(a, 1.0)]
    for weight, winner in ((0.9, "a"), (0.1, "b")):
        fused = fuse(dense, lexical, QUERY, RetrievalSpec(dense_weight=weight))
        assert max(fused.values(), key=lambda chunk: chunk.score).record.chunk_id == winner


def test_rrf_sums_reciprocal_ranks_and_scales_the_best_possible_to_one() -> None:
    a, b, c = (_record(name, _unit(1, 0, 0)) for name in "abc")
    fused = fuse(
        [Hit(a, 0.9), Hit(b, 0.8)], [Hit(a, 5.0), Hit(c, 4.0)], QUERY, RetrievalSpec(fusion="rrf")
    )
    assert fused["a"].score == pytest.approx(1.0)
    assert fused["b"].score == pytest.approx(fused["c"].score)
    assert fused["b"].score == pytest.approx((1 / 62) / (2 / 61))


def test_one_empty_search_still_ranks_the_other() -> None:
    a, b = _record("a", _unit(1, 0, 0)), _record("b", _unit(0, 1, 0))
    fused = fuse([], [Hit(a, 3.0), Hit(b, 1.0)], None, RetrievalSpec())
    assert fused["a"].score > fused["b"].score
    assert fuse([], [], QUERY, RetrievalSpec()) == {}


def test_mmr_skips_near_duplicates_and_keeps_pinned_chunks_first() -> None:
    first = ScoredChunk(_record("first", _unit(1, 0.01, 0)), 0.9)
    twin = ScoredChunk(_record("twin", _unit(1, 0.02, 0)), 0.89)
    other = ScoredChunk(_record("other", _unit(0.6, 0.8, 0)), 0.7)
    pinned = ScoredChunk(_record("pinned", _unit(0, 0, 1)), 2.0, pinned=True)
    ranked = [pinned, first, twin, other]
    chosen = [c.record.chunk_id for c in mmr(ranked, QUERY, 3, 0.5)]
    assert chosen == ["pinned", "first", "other"]
    assert [c.record.chunk_id for c in mmr(ranked, QUERY, 3, 1.0)] == ["pinned", "first", "twin"]


def test_filters_parse_against_declared_fields() -> None:
    fields = {"desk": "string", "lots": "int", "published": "datetime"}
    parsed = parse_filter(
        {"desk": "rates", "lots": {"$gte": 3, "$lt": 9}, "published": {"$gt": "2026-01-01"}},
        fields,  # type: ignore[arg-type]
    )
    assert parsed == [
        Condition("desk", Op.EQ, "rates"),
        Condition("lots", Op.GTE, 3),
        Condition("lots", Op.LT, 9),
        Condition("published", Op.GT, datetime(2026, 1, 1, tzinfo=UTC)),
    ]
    assert parse_filter({"doc_type": {"$in": ["pdf", "docx"]}}, {}) == [
        Condition("doc_type", Op.IN, ("pdf", "docx"))
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"nope": 1}, "unknown field 'nope'"),
        ({"page": "two"}, "is not a int"),
        ({"page": True}, "is not a int"),
        ({"title": {"$gt": "a"}}, "needs a number or a date"),
        ({"title": {"$in": "a"}}, "non-empty list"),
        ({"title": {"$like": "a"}}, "unknown operator"),
        ({"created_at": "yesterday"}, "ISO 8601"),
        ({"title": {}}, "no operator"),
    ],
)
def test_bad_filters_name_the_field_and_the_problem(raw: dict[str, object], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(raw, {})


def test_matches_evaluates_conditions_on_a_record() -> None:
    record = _record("r", QUERY, page=3, metadata={"desk": "rates"})
    assert matches(record, parse_filter({"desk": "rates", "page": {"$lte": 3}}, {"desk": "string"}))
    assert not matches(record, parse_filter({"desk": {"$nin": ["rates"]}}, {"desk": "string"}))
    assert matches(record, parse_filter({"section": {"$ne": "x"}}, {}))
    assert not matches(record, parse_filter({"section": "x"}, {}))


def test_recency_rules_need_a_datetime_field() -> None:
    with pytest.raises(ValueError, match="not a datetime field"):
        KnowledgeBaseSpec.model_validate(
            {"rules": {"recency": {"field": "title", "half_life_days": 9}}}
        )
    spec = KnowledgeBaseSpec.model_validate(
        {
            "fields": {"published": "datetime"},
            "rules": {"recency": {"field": "published", "half_life_days": 9}},
        }
    )
    assert spec.rules.recency is not None


def _feedback(
    vector: np.ndarray, useful: list[str], not_useful: list[str], rating: int | None = None
) -> FeedbackRecord:
    return FeedbackRecord(
        query_vector=vector.astype("<f4").tobytes(),
        retrieved=[{"chunk_id": c, "used": True} for c in ["used-1", *useful, *not_useful]],
        rating=rating,
        useful=useful,
        not_useful=not_useful,
    )


def test_feedback_boosts_apply_to_similar_queries_only() -> None:
    model = FeedbackModel(repo=None, threshold=0.7)  # type: ignore[arg-type]
    model.add("kb", _feedback(_unit(1, 0, 0), ["good"], ["bad"]))
    same = model.boosts("kb", _unit(1, 0, 0))
    assert same == {"good": 1.0, "bad": -1.0}
    close = model.boosts("kb", _unit(1, 0.3, 0))
    assert 0 < close["good"] < 1
    assert model.boosts("kb", _unit(0, 1, 0)) == {}
    assert model.boosts("other-kb", _unit(1, 0, 0)) == {}


def test_a_thumbs_up_lifts_the_chunks_the_answer_used_and_boosts_are_clipped() -> None:
    model = FeedbackModel(repo=None, threshold=0.5)  # type: ignore[arg-type]
    for _ in range(3):
        model.add("kb", _feedback(_unit(1, 0, 0), ["good"], [], rating=1))
    boosts = model.boosts("kb", _unit(1, 0, 0))
    assert boosts["good"] == 1.0
    assert boosts["used-1"] == 1.0  # three half-weight thumbs up, clipped at 1
    model.forget("kb")
    assert model.boosts("kb", _unit(1, 0, 0)) == {}
