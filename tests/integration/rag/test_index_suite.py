"""One suite for both chunk indexes: LanceDB on disk and PostgreSQL with pgvector.

Every test runs once per backend (the ``backend`` fixture in conftest.py). Expected
results come from brute force in numpy and from a small Python evaluator of the filter
semantics, never from the index under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import lancedb
import numpy as np
import numpy.typing as npt
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from atrium.rag.index import ChunkIndex, CollectionNotFoundError, CollectionSpec
from atrium.rag.types import ChunkRecord, Condition, Hit, Op, Scalar, SearchScope
from tests.integration.rag.conftest import IndexFactory

pytestmark = pytest.mark.integration

DIM = 16
FIELDS: dict[str, Any] = {
    "year": "int",
    "rating": "float",
    "lang": "string",
    "reviewed": "bool",
    "published": "datetime",
}
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ALL = SearchScope()


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> npt.NDArray[np.float32]:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunk(
    chunk_id: str,
    vector: npt.NDArray[np.float32],
    *,
    document_id: str = "doc",
    source_id: str = "src",
    text: str = "common words here",
    groups: tuple[str, ...] = (),
    **fields: Any,
) -> ChunkRecord:
    builtin = {
        name: fields.pop(name)
        for name in ("doc_type", "title", "section", "page", "created_at", "updated_at")
        if name in fields
    }
    return ChunkRecord(
        chunk_id=chunk_id,
        document_id=document_id,
        source_id=source_id,
        ordinal=int(fields.pop("ordinal", 0)),
        text=text,
        context=f"context of {text}",
        title=builtin.pop("title", "A title"),
        doc_type=builtin.pop("doc_type", "pdf"),
        vector=vector,
        access_groups=groups,
        metadata=fields,
        **builtin,
    )


async def open_collection(make: IndexFactory, name: str, **options: Any) -> ChunkIndex:
    index = await make(**options)
    await index.create(CollectionSpec(name, DIM, dict(FIELDS)))
    return index


def ids(hits: Sequence[Hit] | Sequence[ChunkRecord]) -> set[str]:
    return {item.record.chunk_id if isinstance(item, Hit) else item.chunk_id for item in hits}


def assert_same_record(got: ChunkRecord, want: ChunkRecord) -> None:
    for name in ChunkRecord.__slots__:
        if name == "vector":
            np.testing.assert_array_equal(got.vector, want.vector)
            assert got.vector.dtype == np.float32
        else:
            assert getattr(got, name) == getattr(want, name), name


async def test_create_is_idempotent_and_drop_removes(make_index: IndexFactory, collection: str):
    index = await open_collection(make_index, collection)
    await index.create(CollectionSpec(collection, DIM, dict(FIELDS)))
    with pytest.raises(ValueError, match="different spec"):
        await index.create(CollectionSpec(collection, DIM + 1, dict(FIELDS)))
    with pytest.raises(ValueError, match="different spec"):
        await index.create(CollectionSpec(collection, DIM, {"year": "string"}))
    await index.replace_documents(
        collection, ["doc"], [chunk("a", unit(np.random.default_rng(0), 1)[0])]
    )
    assert await index.count(collection) == 1

    await index.drop(collection)
    await index.drop(collection)
    with pytest.raises(CollectionNotFoundError):
        await index.count(collection)
    await index.create(CollectionSpec(collection, DIM, {}))
    assert await index.count(collection) == 0


async def test_bad_collection_names_and_specs_are_refused(make_index: IndexFactory):
    index = await make_index()
    for name in ("kb'; DROP TABLE x; --", "a b", "", "x" * 41, "kb/../etc"):
        with pytest.raises(ValueError, match="collection name"):
            await index.create(CollectionSpec(name, DIM))
        with pytest.raises(ValueError, match="collection name"):
            await index.count(name)
    with pytest.raises(ValueError, match="'page'"):
        await index.create(CollectionSpec("kb_x", DIM, {"page": "int"}))
    with pytest.raises(ValueError, match="field name"):
        await index.create(CollectionSpec("kb_x", DIM, {"bad-name": "int"}))
    with pytest.raises(ValueError, match="dimensions"):
        await index.create(CollectionSpec("kb_x", 0))
    with pytest.raises(CollectionNotFoundError):
        await index.dense("kb_missing", np.zeros(DIM, np.float32), 3, ALL)


async def test_replace_swaps_a_document_and_leaves_others(
    make_index: IndexFactory, collection: str
):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(1), 8)
    await index.replace_documents(
        collection,
        ["a", "b"],
        [chunk(f"a{i}", vectors[i], document_id="a", ordinal=i) for i in range(3)]
        + [chunk("b0", vectors[3], document_id="b")],
    )
    await index.replace_documents(
        collection,
        ["a"],
        [chunk(f"a-v2-{i}", vectors[4 + i], document_id="a", text="second") for i in range(2)],
    )
    assert await index.count(collection) == 3
    assert ids(await index.get(collection, ["a0", "a1", "a2", "a-v2-0", "a-v2-1", "b0"])) == {
        "a-v2-0",
        "a-v2-1",
        "b0",
    }
    # A document listed with no chunks is deleted; unknown ids are no-ops.
    await index.replace_documents(collection, ["a", "never-seen"], [])
    assert ids(await index.get(collection, ["a-v2-0", "b0"])) == {"b0"}
    with pytest.raises(ValueError, match="not among the documents"):
        await index.replace_documents(collection, ["a"], [chunk("x", vectors[0], document_id="b")])
    with pytest.raises(ValueError, match="shape"):
        await index.replace_documents(
            collection, ["a"], [chunk("x", vectors[0][:4], document_id="a")]
        )
    with pytest.raises(ValueError, match="'year'"):
        await index.replace_documents(
            collection, ["a"], [chunk("x", vectors[0], document_id="a", year="2020")]
        )
    assert await index.count(collection) == 1


async def test_a_reader_never_sees_a_mix_of_versions(make_index: IndexFactory, collection: str):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(2), 10)
    versions = {
        1: [chunk(f"v1-{i}", vectors[i], year=1) for i in range(5)],
        2: [chunk(f"v2-{i}", vectors[5 + i], year=2) for i in range(3)],
    }
    await index.replace_documents(collection, ["doc"], versions[1])
    done = asyncio.Event()
    seen: list[tuple[int, frozenset[Any]]] = []

    async def write() -> None:
        for round_ in range(16):
            await index.replace_documents(collection, ["doc"], versions[2 - round_ % 2])
        done.set()

    async def read() -> None:
        while not done.is_set():
            hits = await index.dense(collection, vectors[0], 20, ALL)
            seen.append((len(hits), frozenset(hit.record.metadata["year"] for hit in hits)))
            await asyncio.sleep(0)

    await asyncio.gather(write(), read(), read())
    assert seen
    assert all((n, years) in {(5, frozenset({1})), (3, frozenset({2}))} for n, years in seen)


async def test_delete_source_counts_and_spares_other_sources(
    make_index: IndexFactory, collection: str
):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(3), 6)
    records = [
        chunk(f"c{i}", vectors[i], document_id=f"d{i}", source_id="s1" if i < 4 else "s2")
        for i in range(6)
    ]
    await index.replace_documents(collection, [f"d{i}" for i in range(6)], records)
    assert await index.delete_source(collection, "s1") == 4
    assert await index.delete_source(collection, "s1") == 0
    assert await index.delete_source(collection, "s1' OR '1'='1") == 0
    assert ids(await index.get(collection, [f"c{i}" for i in range(6)])) == {"c4", "c5"}


async def test_dense_matches_brute_force(make_index: IndexFactory, collection: str, backend: str):
    index = await open_collection(make_index, collection)
    rng = np.random.default_rng(4)
    vectors = unit(rng, 500)
    records = [chunk(f"c{i}", vectors[i], document_id=f"d{i % 50}") for i in range(500)]
    await index.replace_documents(collection, [f"d{i}" for i in range(50)], records)
    recalls = []
    for query in unit(rng, 8):
        hits = await index.dense(collection, query, 10, ALL)
        truth = np.argsort(-(vectors @ query))[:10]
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True)
        for hit in hits:
            assert hit.score == pytest.approx(float(hit.record.vector @ query), abs=1e-5)
        recalls.append(len(ids(hits) & {f"c{i}" for i in truth}) / 10)
        if backend == "lance":  # below the ANN threshold Lance searches exactly
            assert [hit.record.chunk_id for hit in hits] == [f"c{i}" for i in truth]
    assert len(recalls) == 8
    assert min(recalls) >= 0.9


async def test_lexical_matches_stemmed_terms_and_ranks(make_index: IndexFactory, collection: str):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(5), 5)
    texts = [
        "She runs along the river every morning",
        "The cat sleeps on the warm windowsill",
        "Running shoes for runners who run marathons",
        "Quarterly revenue grew in the northern region",
        "A note about gardening",
    ]
    records = [chunk(f"c{i}", vectors[i], text=text) for i, text in enumerate(texts)]
    await index.replace_documents(collection, ["doc"], records)
    hits = await index.lexical(collection, "running", 5, ALL)
    assert [hit.record.chunk_id for hit in hits] == ["c2", "c0"]
    assert hits[0].score > hits[1].score > 0
    assert ids(await index.lexical(collection, "Revenue GROWTH", 5, ALL)) == {"c3"}
    assert ids(await index.lexical(collection, "sleeping cats", 1, ALL)) == {"c1"}
    assert await index.lexical(collection, "the of and", 5, ALL) == []
    assert await index.lexical(collection, "   ", 5, ALL) == []


async def test_lexical_ranks_rare_terms_above_common_ones(
    make_index: IndexFactory, collection: str, backend: str, storage: str
):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(15), 120)
    needles = {"c5", "c50", "c99"}
    records = [
        chunk(
            f"c{i}",
            vectors[i],
            document_id=f"d{i}",
            text=f"protein sample {i} {'glycosylation' if f'c{i}' in needles else 'assay'}",
        )
        for i in range(120)
    ]
    await index.replace_documents(collection, [f"d{i}" for i in range(120)], records)
    if backend == "pgvector":  # statistics, as autovacuum gathers them, drive term selection
        engine = create_async_engine(storage)
        async with engine.begin() as conn:
            await conn.execute(sa.text("ANALYZE"))
        await engine.dispose()
    hits = await index.lexical(collection, "glycosylation of protein samples", 10, ALL)
    assert ids(hits[:3]) == needles
    assert len(await index.lexical(collection, "protein samples", 10, ALL)) == 10


def _rows(rng: np.random.Generator) -> list[ChunkRecord]:
    """Twenty-four chunks whose fields cover every filter case, with some left empty."""
    vectors = unit(rng, 24)
    records = []
    for i in range(24):
        fields: dict[str, Any] = {
            "doc_type": ("pdf", "html", "md")[i % 3],
            "title": f"title {i % 5}",
            "section": None if i % 4 == 0 else f"section {i % 3}",
            "page": None if i % 6 == 0 else i % 7,
            "created_at": None if i % 8 == 0 else T0 + timedelta(days=i),
            "rating": i * 0.25,
        }
        if i % 5:
            fields["year"] = 2000 + i
        if i % 3:
            fields["lang"] = ("en", "de")[i % 2]
        if i % 7:
            fields["reviewed"] = i % 2 == 0
        if i % 2:
            fields["published"] = T0 - timedelta(hours=i)
        records.append(
            chunk(f"c{i}", vectors[i], document_id=f"d{i % 4}", source_id=f"s{i % 2}", **fields)
        )
    return records


def _value(record: ChunkRecord, field: str) -> Scalar | None:
    if field in FIELDS:
        return record.metadata.get(field)
    value: Scalar | None = getattr(record, field)
    return value


def _holds(actual: Scalar | None, op: Op, value: Any) -> bool:
    """The filter semantics both indexes promise: only $ne and $nin match a missing field."""
    if op is Op.NE:
        return actual is None or actual != value
    if op is Op.NIN:
        return actual is None or actual not in value
    if actual is None:
        return False
    checks: dict[Op, Any] = {
        Op.EQ: lambda: actual == value,
        Op.IN: lambda: actual in value,
        Op.GT: lambda: actual > value,
        Op.GTE: lambda: actual >= value,
        Op.LT: lambda: actual < value,
        Op.LTE: lambda: actual <= value,
    }
    return bool(checks[op]())


FILTER_CASES: list[tuple[str, Op, Any]] = [
    ("doc_type", Op.EQ, "html"),
    ("doc_type", Op.NE, "html"),
    ("doc_type", Op.IN, ("md", "pdf")),
    ("doc_type", Op.NIN, ("md", "pdf")),
    ("document_id", Op.EQ, "d1"),
    ("source_id", Op.NE, "s0"),
    ("title", Op.GTE, "title 3"),
    ("section", Op.EQ, "section 1"),
    ("section", Op.NE, "section 1"),
    ("section", Op.NIN, ("section 0",)),
    ("page", Op.GT, 3),
    ("page", Op.LTE, 2),
    ("page", Op.IN, (1, 5)),
    ("page", Op.NE, 4),
    ("created_at", Op.GT, T0 + timedelta(days=10)),
    # The same instant written in another zone: compared in UTC.
    ("created_at", Op.LT, (T0 + timedelta(days=6)).astimezone(timezone(timedelta(hours=-5)))),
    ("created_at", Op.EQ, T0 + timedelta(days=5)),
    ("year", Op.GTE, 2015),
    ("year", Op.LT, 2010),
    ("year", Op.IN, (2001, 2002, 2013)),
    ("year", Op.NIN, (2001, 2002)),
    ("year", Op.NE, 2003),
    ("rating", Op.GT, 2.5),
    ("rating", Op.LTE, 1),
    ("lang", Op.EQ, "de"),
    ("lang", Op.NE, "de"),
    ("lang", Op.IN, ()),
    ("lang", Op.NIN, ()),
    ("reviewed", Op.EQ, True),
    ("reviewed", Op.NE, True),
    ("published", Op.GTE, T0 - timedelta(hours=9)),
    ("published", Op.LT, T0 - timedelta(hours=15)),
]


async def test_every_filter_operator_on_builtin_and_declared_fields(
    make_index: IndexFactory, collection: str
):
    index = await open_collection(make_index, collection)
    records = _rows(np.random.default_rng(6))
    await index.replace_documents(collection, [f"d{i}" for i in range(4)], records)
    query = records[0].vector
    for field, op, value in FILTER_CASES:
        want = {r.chunk_id for r in records if _holds(_value(r, field), op, value)}
        scope = SearchScope((Condition(field, op, value),))
        assert ids(await index.dense(collection, query, 50, scope)) == want, (field, op)
        assert ids(await index.lexical(collection, "common", 50, scope)) == want, (field, op)
    both = SearchScope((Condition("year", Op.GTE, 2010), Condition("doc_type", Op.EQ, "pdf")))
    want = {"c12", "c18", "c21"}
    assert ids(await index.dense(collection, query, 50, both)) == want


async def test_access_groups(make_index: IndexFactory, collection: str):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(7), 4)
    groups: list[tuple[str, ...]] = [(), ("a",), ("b",), ("a", "c")]
    records = [chunk(f"c{i}", vectors[i], groups=g) for i, g in enumerate(groups)]
    await index.replace_documents(collection, ["doc"], records)
    cases: list[tuple[frozenset[str] | None, set[str]]] = [
        (None, {"c0", "c1", "c2", "c3"}),
        (frozenset(), {"c0"}),
        (frozenset({"a"}), {"c0", "c1", "c3"}),
        (frozenset({"c", "z"}), {"c0", "c3"}),
        (frozenset({"b", "c"}), {"c0", "c2", "c3"}),
        (frozenset({"a') OR true OR ('"}), {"c0"}),
    ]
    for scope_groups, want in cases:
        scope = SearchScope(groups=scope_groups)
        assert ids(await index.dense(collection, vectors[1], 10, scope)) == want
        assert ids(await index.lexical(collection, "words", 10, scope)) == want
    got = await index.get(collection, ["c3"])
    assert got[0].access_groups == ("a", "c")


async def test_restrictive_scope_still_returns_k(make_index: IndexFactory, collection: str):
    index = await open_collection(make_index, collection)
    rng = np.random.default_rng(8)
    vectors = unit(rng, 600)
    rare = set(range(0, 600, 50))  # 12 of 600 chunks
    records = [
        chunk(
            f"c{i}",
            vectors[i],
            document_id=f"d{i % 20}",
            text="needle words" if i in rare else "common words",
            groups=("secret",) if i not in rare else ("team",),
            lang="rare" if i in rare else "en",
        )
        for i in range(600)
    ]
    await index.replace_documents(collection, [f"d{i}" for i in range(20)], records)
    query = unit(rng, 1)[0]
    by_score = sorted(rare, key=lambda i: -float(vectors[i] @ query))
    for scope in (
        SearchScope((Condition("lang", Op.EQ, "rare"),)),
        SearchScope(groups=frozenset({"team"})),
    ):
        hits = await index.dense(collection, query, 10, scope)
        assert [hit.record.chunk_id for hit in hits] == [f"c{i}" for i in by_score[:10]]
        hits = await index.lexical(collection, "words", 10, scope)
        assert len(hits) == 10
        assert ids(hits) <= {f"c{i}" for i in rare}


async def test_bad_fields_and_values_raise_naming_the_field(
    make_index: IndexFactory, collection: str
):
    index = await open_collection(make_index, collection)
    query = np.ones(DIM, np.float32) / np.sqrt(DIM)
    bad: list[tuple[Condition, str]] = [
        (Condition("nope", Op.EQ, 1), "'nope'"),
        (Condition("metadata", Op.EQ, "x"), "'metadata'"),
        (Condition("year", Op.EQ, "2020"), "'year'"),
        (Condition("year", Op.GT, 1.5), "'year'"),
        (Condition("year", Op.EQ, True), "'year'"),
        (Condition("page", Op.EQ, 2**70), "'page'"),
        (Condition("rating", Op.GT, float("nan")), "'rating'"),
        (Condition("reviewed", Op.GT, False), "'reviewed'"),
        (Condition("reviewed", Op.EQ, 1), "'reviewed'"),
        (Condition("created_at", Op.GT, datetime(2024, 1, 1)), "'created_at'"),
        (Condition("published", Op.LT, "2024-01-01"), "'published'"),
        (Condition("lang", Op.IN, "en"), "'lang'"),
        (Condition("lang", Op.EQ, ("en",)), "'lang'"),
        (Condition("lang", Op.IN, ("en", 3)), "'lang'"),
    ]
    for condition, field in bad:
        scope = SearchScope((condition,))
        with pytest.raises(ValueError, match=field):
            await index.dense(collection, query, 5, scope)
        with pytest.raises(ValueError, match=field):
            await index.lexical(collection, "words", 5, scope)
    with pytest.raises(ValueError, match="'vector'"):
        await index.dense(collection, np.ones(DIM + 1, np.float32), 5, ALL)
    with pytest.raises(ValueError, match="'k'"):
        await index.dense(collection, query, 0, ALL)


async def test_injection_attempts_are_harmless(make_index: IndexFactory, collection: str):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(9), 3)
    evil = "x' OR '1'='1"
    records = [
        chunk("c0", vectors[0], title=evil, lang="a\\'b"),
        chunk("c1", vectors[1], title="plain", groups=("private",)),
        chunk("c2", vectors[2], title="x", text="'); DROP TABLE chunks; --"),
    ]
    await index.replace_documents(collection, ["doc"], records)
    cases: list[tuple[Condition, set[str]]] = [
        (Condition("title", Op.EQ, evil), {"c0"}),
        (Condition("doc_type", Op.EQ, evil), set()),
        (Condition("doc_type", Op.IN, (evil, "') OR ('1'='1")), set()),
        (Condition("lang", Op.EQ, "a\\'b"), {"c0"}),
        (Condition("lang", Op.EQ, "a\\"), set()),
    ]
    for condition, want in cases:
        scope = SearchScope((condition,), groups=frozenset())
        assert ids(await index.dense(collection, vectors[0], 5, scope)) == want
    with pytest.raises(ValueError, match="'title'"):
        await index.dense(
            collection, vectors[0], 5, SearchScope((Condition("title", Op.EQ, "x\0"),))
        )
    queries = ("'); DROP TABLE chunks; --", "a & b | !c <-> d:*", '"quoted" AND (x', "\\", "x\0")
    for query in queries:
        await index.lexical(collection, query, 5, SearchScope(groups=frozenset({evil})))
    assert await index.count(collection) == 3
    hits = await index.lexical(collection, "drop table", 5, ALL)
    assert ids(hits) == {"c2"}


async def test_get_round_trips_every_field(make_index: IndexFactory, collection: str):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(10), 2)
    full = ChunkRecord(
        chunk_id="full",
        document_id="doc",
        source_id="src",
        ordinal=7,
        text="Ünïcode text ✓ with 'quotes'",
        context="the parent passage",
        title="Title",
        doc_type="docx",
        vector=vectors[0],
        section="Results > Table 2",
        page=12,
        uri="file:///tmp/doc.docx",
        created_at=datetime(2023, 5, 1, 8, 30, 15, 123456, tzinfo=UTC),
        updated_at=datetime(2024, 1, 2, tzinfo=UTC),
        access_groups=("a", "b"),
        metadata={
            "year": 2021,
            "rating": 4.5,
            "lang": "en",
            "reviewed": False,
            "published": datetime(2022, 2, 2, 2, 2, tzinfo=UTC),
            "undeclared": "kept",
            "undeclared_when": datetime(2020, 1, 1, tzinfo=UTC),
        },
    )
    bare = chunk("bare", vectors[1])
    await index.replace_documents(collection, ["doc"], [full, bare])
    got = {record.chunk_id: record for record in await index.get(collection, ["full", "bare", "x"])}
    assert set(got) == {"full", "bare"}
    assert_same_record(got["full"], full)
    assert_same_record(got["bare"], bare)
    assert await index.get(collection, []) == []
    assert await index.count(collection) == 2


async def test_reopen_after_close(make_index: IndexFactory, collection: str):
    index = await open_collection(make_index, collection)
    vectors = unit(np.random.default_rng(11), 3)
    records = [chunk(f"c{i}", vectors[i], text=f"persisted row {i}") for i in range(3)]
    await index.replace_documents(collection, ["doc"], records)
    await index.close()

    reopened = await make_index()
    assert await reopened.count(collection) == 3
    hits = await reopened.dense(collection, vectors[2], 1, ALL)
    assert hits[0].record.chunk_id == "c2"
    assert ids(await reopened.lexical(collection, "persisted", 5, ALL)) == {"c0", "c1", "c2"}
    await reopened.create(CollectionSpec(collection, DIM, dict(FIELDS)))
    assert await reopened.count(collection) == 3


async def _lance_table(storage: str, collection: str) -> lancedb.AsyncTable:
    return await (await lancedb.connect_async(storage)).open_table(collection)


async def test_lance_builds_and_maintains_its_indexes(
    make_index: IndexFactory, collection: str, backend: str, storage: str
):
    if backend != "lance":
        pytest.skip("Lance's ANN threshold and index upkeep")
    index = await open_collection(
        make_index, collection, ann_threshold=300, reindex_after_rows=200, reindex_idle_s=600
    )
    rng = np.random.default_rng(12)
    vectors = unit(rng, 700)
    rare = set(range(0, 700, 60))

    def batch(start: int, stop: int) -> list[ChunkRecord]:
        return [
            chunk(
                f"c{i}",
                vectors[i],
                document_id=f"d{i}",
                text=f"row{i} {'needle' if i in rare else 'hay'} words",
                lang="rare" if i in rare else "en",
            )
            for i in range(start, stop)
        ]

    for start in range(0, 600, 150):
        documents = [f"d{i}" for i in range(start, start + 150)]
        await index.replace_documents(collection, documents, batch(start, start + 150))
    table = await _lance_table(storage, collection)
    stats = await table.index_stats("vector_idx")
    # Trained at 300 rows, trained again at 600 (doubled), each past 200 written rows.
    assert stats is not None
    assert (stats.num_indexed_rows, stats.num_unindexed_rows) == (600, 0)
    # Rows written since the last upkeep are outside the indexes, and still found.
    await index.replace_documents(collection, [f"d{i}" for i in range(600, 700)], batch(600, 700))
    await table.checkout_latest()
    stats = await table.index_stats("text_idx")
    assert stats is not None
    assert stats.num_unindexed_rows == 100
    assert ids(await index.lexical(collection, "row650", 5, ALL)) == {"c650"}
    assert ids(await index.dense(collection, vectors[650], 1, ALL)) == {"c650"}

    query = unit(rng, 1)[0]
    truth = [f"c{i}" for i in np.argsort(-(vectors @ query))[:10]]
    hits = await index.dense(collection, query, 10, ALL)
    assert len(ids(hits) & set(truth)) >= 9
    for hit in hits:
        assert hit.score == pytest.approx(float(hit.record.vector @ query), abs=1e-5)
    scope = SearchScope((Condition("lang", Op.EQ, "rare"),))
    by_score = sorted(rare, key=lambda i: -float(vectors[i] @ query))
    hits = await index.dense(collection, query, 10, scope)
    assert [hit.record.chunk_id for hit in hits] == [f"c{i}" for i in by_score[:10]]


async def test_lance_upkeep_runs_once_writes_pause(
    make_index: IndexFactory, collection: str, backend: str, storage: str
):
    if backend != "lance":
        pytest.skip("Lance's index upkeep")
    index = await open_collection(make_index, collection, ann_threshold=100, reindex_idle_s=0.05)
    vectors = unit(np.random.default_rng(14), 150)
    records = [chunk(f"c{i}", vectors[i], document_id=f"d{i}") for i in range(150)]
    await index.replace_documents(collection, [f"d{i}" for i in range(150)], records)
    table = await _lance_table(storage, collection)
    for _ in range(200):
        await table.checkout_latest()
        stats = await table.index_stats("vector_idx")
        if stats is not None:
            break
        await asyncio.sleep(0.05)
    assert stats is not None
    assert stats.num_indexed_rows == 150
    text = await table.index_stats("text_idx")
    assert text is not None
    assert text.num_unindexed_rows == 0
    assert ids(await index.dense(collection, vectors[7], 1, ALL)) == {"c7"}


async def test_pgvector_filtered_hnsw_scans_fill_k(
    make_index: IndexFactory, collection: str, backend: str, storage: str
):
    if backend != "pgvector":
        pytest.skip("pgvector's iterative HNSW scans")
    # Large enough, and analyzed, so that PostgreSQL plans an HNSW scan for an
    # access-group filter (on small tables a sequential scan and a sort win).
    index = await make_index()
    await index.create(CollectionSpec(collection, 128))
    rng = np.random.default_rng(13)
    vectors = unit(rng, 2400, dim=128)
    visible = {f"c{i}" for i in range(0, 2400, 10)}
    records = [
        chunk(
            f"c{i}",
            vectors[i],
            document_id=f"d{i % 10}",
            groups=("team",) if f"c{i}" in visible else ("secret",),
        )
        for i in range(2400)
    ]
    await index.replace_documents(collection, [f"d{i}" for i in range(10)], records)
    engine = create_async_engine(storage)
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE"))
    await engine.dispose()
    query = unit(rng, 1, dim=128)[0]
    scope = SearchScope(groups=frozenset({"team"}))
    truth = sorted(visible, key=lambda chunk_id: -float(vectors[int(chunk_id[1:])] @ query))
    # Iterative scans walk the graph on until k rows pass the filter.
    hits = await index.dense(collection, query, 8, scope)
    assert len(hits) == 8
    assert len(ids(hits) & set(truth[:8])) >= 7
    # Without iterative scans (pgvector before 0.8) the HNSW scan ends after ef_search
    # candidates, most of them filtered out; the index then runs the query exactly.
    limited = await make_index(iterative_scan="off", ef_search=8)
    hits = await limited.dense(collection, query, 8, scope)
    assert [hit.record.chunk_id for hit in hits] == truth[:8]
