"""Throughput of the bundled embedder (all-MiniLM-L6-v2, int8 weights, onnxruntime CPU).

Two measurements, in one run on one machine:

- the raw model: tokens/s for batches of 256-token inputs (every position a real token,
  so no padding) at several batch sizes, onnxruntime thread counts and graph
  optimisation levels, and two calls at once on one shared session (1 thread each: what
  the backend's two workers do), with the CPU time per token and the foreign load
  (other processes' cores) during each;
- the ingestion pipeline: SciFact abstracts synced by the production
  :class:`~atrium.rag.ingest.Ingestor` (parse, chunk, count tokens, embed through the
  catalog's ONNX backend, write to an embedded LanceDB index and the document records),
  with the time spent waiting on the embedder and on index writes, and the latency of a
  one-sentence query embedded every ``--probe-every`` seconds during the sync (the query
  shares the model's workers with the sync).

Throughput is given as tokens/s and as "256-token chunks/s" (tokens/s / 256), the unit
of the ingestion target. The FLOPs a token costs bound what a CPU can do: about
21 MFLOP per token for the six layers' matrix products (2 x 384 x (4 x 384 + 2 x 1536)
x 6), plus 4 x 384 x sequence length x 6 for attention (2.4 MFLOP at 256 tokens).

    .venv/bin/python bench/embedder_throughput.py               # ~10 minutes on 2 busy cores
    .venv/bin/python bench/embedder_throughput.py --documents 200 --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from _common import (
    REPO,
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
from rag_beir import BeirConnector, embedder_catalog, spec_for

from atrium.rag.embedding import DEFAULT_BATCH, CatalogEmbedder, TokenCounter
from atrium.rag.index import ChunkIndex, CollectionSpec, LanceChunkIndex
from atrium.rag.ingest import Ingestor, SyncTarget
from atrium.rag.types import ChunkRecord
from atrium.runtime.embedders import bundled_model_paths
from atrium.store.db import Database
from atrium.store.knowledge import KnowledgeRepository

NAME = "embedder_throughput"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "beir" / "scifact"
KB = "kb_throughput"
SEQUENCE = 256
#: Multiply-adds per token of the six layers' dense layers, and of attention per position.
FLOPS_DENSE = 2 * 384 * (4 * 384 + 2 * 1536) * 6
FLOPS_ATTENTION_PER_POSITION = 4 * 384 * 6
#: Issue 4's ingestion target, in 256-token chunks per second.
TARGET_CHUNKS = 60
PROBE = "What reduces the risk of cardiovascular disease in adults?"
LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}

# -- the raw model -----------------------------------------------------------------


def open_session(model: Path, threads: int, level: str) -> ort.InferenceSession:
    """A CPU session set up as the product's (sequential, one inter-op thread)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


def feeds(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray[Any, Any]]:
    """``batch`` rows of 256 real tokens ([CLS] ... [SEP]), no padding."""
    rng = np.random.default_rng(batch)
    ids = rng.integers(1000, 29000, size=(batch, SEQUENCE)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    available = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    return {node.name: available[node.name] for node in session.get_inputs()}


def run_for(session: ort.InferenceSession, batch: int, seconds: float, callers: int) -> JSONDict:
    """Run batches for ``seconds`` from ``callers`` threads at once; tokens/s and CPU."""
    inputs = feeds(session, batch)
    session.run(None, inputs)
    counts = [0] * callers
    deadline = time.perf_counter() + seconds

    def loop(slot: int) -> None:
        while time.perf_counter() < deadline:
            session.run(None, inputs)
            counts[slot] += 1

    meter = ForeignLoad().start()
    cpu, started = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=loop, args=(slot,)) for slot in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens = sum(counts) * batch * SEQUENCE
    return {
        "tokens/s": round(tokens / wall, 1),
        "256-token chunks/s": round(tokens / wall / SEQUENCE, 2),
        "tokens per CPU second": round(tokens / cpu, 1),
        "GFLOP/s": round(tokens * flops_per_token(SEQUENCE) / wall / 1e9, 1),
        "foreign_cores": meter.stop(),
    }


def flops_per_token(sequence: int) -> float:
    """FLOPs one token costs at ``sequence`` positions (dense layers plus attention)."""
    return FLOPS_DENSE + FLOPS_ATTENTION_PER_POSITION * sequence


def raw_model(seconds: float) -> list[JSONDict]:
    """Tokens/s of the ONNX graph alone for each configuration."""
    model, _ = bundled_model_paths()
    configs = [
        # (threads per session, batch, callers at once, optimisation level)
        (1, 1, 1, "all"),
        (1, 16, 1, "all"),
        (1, 32, 1, "all"),
        (1, 16, 1, "extended"),
        (2, 1, 1, "all"),
        (2, 16, 1, "all"),
        (2, 64, 1, "all"),
        (1, 16, 2, "all"),
    ]
    rows = []
    for threads, batch, callers, level in configs:
        wait_for_quiet(timeout_s=10)
        session = open_session(model, threads, level)
        row = {"threads": threads, "batch": batch, "callers": callers, "optimisation": level}
        row |= run_for(session, batch, seconds, callers)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# -- the ingestion pipeline ---------------------------------------------------------


class TimedIndex:
    """An index that adds up the time its writes take."""

    def __init__(self, index: ChunkIndex) -> None:
        self.index = index
        self.seconds = 0.0
        self.records: list[ChunkRecord] = []

    async def replace_documents(
        self, name: str, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]
    ) -> None:
        started = time.perf_counter()
        await self.index.replace_documents(name, document_ids, chunks)
        self.seconds += time.perf_counter() - started
        self.records.extend(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)


class TimedEmbedder:
    """A text embedder that adds up the time its callers wait for it."""

    def __init__(self, embedder: CatalogEmbedder) -> None:
        self.embedder = embedder
        self.seconds = 0.0

    @property
    def model(self) -> str:
        return self.embedder.model

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        started = time.perf_counter()
        try:
            return await self.embedder.embed(texts)
        finally:
            self.seconds += time.perf_counter() - started


async def probe_queries(
    embedder: CatalogEmbedder, every: float, stop: asyncio.Event
) -> list[float]:
    """Embed one query every ``every`` seconds until ``stop``; latencies in seconds."""
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        await embedder.embed([PROBE])
        latencies.append(time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return latencies


async def ingestion(
    work: Path, corpus: list[dict[str, str]], concurrency: int | None, probe_every: float
) -> JSONDict:
    """Sync ``corpus`` into a fresh knowledge base; throughput, waits and probe latency."""
    await asyncio.to_thread(work.mkdir, parents=True)
    db = Database(f"sqlite+aiosqlite:///{work / 'atrium.db'}")
    await db.migrate()
    repo = KnowledgeRepository(db)
    lance = LanceChunkIndex(work / "index")
    async with embedder_catalog() as catalog:
        embedder = TimedEmbedder(CatalogEmbedder(catalog, "minilm", concurrency=concurrency))
        queries = CatalogEmbedder(catalog, "minilm")
        spec = spec_for()
        await lance.create(CollectionSpec(KB, 384, {}))
        kb = await repo.create_kb("throughput", spec.model_dump(mode="json"))
        source = await repo.add_source(kb.id, "corpus", {})
        index = TimedIndex(lance)
        ingestor = Ingestor(repo, index, TokenCounter())  # type: ignore[arg-type]
        target = SyncTarget(KB, KB, spec, source.id, ())
        wait_for_quiet(timeout_s=20)
        stop = asyncio.Event()
        probe = asyncio.create_task(probe_queries(queries, probe_every, stop))
        meter = ForeignLoad().start()
        cpu, started = time.process_time(), time.perf_counter()
        progress = await ingestor.sync(target, BeirConnector(corpus), embedder)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        foreign = meter.stop()
        stop.set()
        latencies = await probe
    await lance.close()
    await db.close()
    # Tokens the model saw: the tokenizer's count plus [CLS] and [SEP], truncated at 256.
    counts = TokenCounter().count_many([record.text for record in index.records])
    tokens = sum(min(count + 2, SEQUENCE) for count in counts)
    return {
        "embedder concurrency": concurrency or "backend default",
        "batch": DEFAULT_BATCH,
        "documents": progress.added,
        "chunks": progress.chunks,
        "seconds": round(wall, 2),
        "chunks/s": round(progress.chunks / wall, 2),
        "tokens/s": round(tokens / wall, 1),
        "mean tokens per chunk": round(tokens / max(progress.chunks, 1), 1),
        "256-token chunks/s": round(tokens / SEQUENCE / wall, 2),
        "tokens per CPU second": round(tokens / cpu, 1),
        "CPU cores used": round(cpu / wall, 2),
        "waiting on the embedder, s": round(embedder.seconds, 2),
        "waiting on index writes, s": round(index.seconds, 2),
        "query embedding during the sync, ms": {
            k: round(v * 1000, 1) for k, v in summary(latencies).items() if k != "n"
        }
        | {"n": len(latencies)},
        "foreign_cores": foreign,
    }


def load_corpus(data: Path, documents: int) -> list[dict[str, str]]:
    """The first ``documents`` SciFact abstracts."""
    corpus = []
    with (data / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            corpus.append(json.loads(line))
            if len(corpus) >= documents:
                break
    return corpus


# -- report -------------------------------------------------------------------------


def markdown(results: JSONDict, facts: JSONDict) -> str:
    """The results as Markdown tables."""
    raw = results["raw_model"]
    lines = [
        "# Bundled embedder throughput (all-MiniLM-L6-v2 int8, onnxruntime CPU)\n",
        f"Machine: {facts['cpu_model']}, {facts['cpus_usable']} usable CPUs, load "
        f"{facts['load_average_1_5_15']} at the end; onnxruntime {facts['onnxruntime']}; "
        f"Atrium commit {str(facts['atrium']['commit'])[:10]}. Foreign cores: the average "
        "number of cores other processes kept busy during each measurement (a shared "
        "machine: the larger it is, the lower the numbers).\n",
        "## Raw model, 256-token inputs\n",
        markdown_table(
            [
                "threads",
                "batch",
                "calls at once",
                "graph opt.",
                "tokens/s",
                "256-token chunks/s",
                "tokens per CPU s",
                "GFLOP/s",
                "foreign cores",
            ],
            [
                [
                    str(r["threads"]),
                    str(r["batch"]),
                    str(r["callers"]),
                    r["optimisation"],
                    ms(r["tokens/s"], 0),
                    ms(r["256-token chunks/s"], 1),
                    ms(r["tokens per CPU second"], 0),
                    ms(r["GFLOP/s"], 1),
                    ms(r["foreign_cores"], 2),
                ]
                for r in raw
            ],
        ),
        "\n" + ceiling(raw, facts["cpus_usable"]) + "\n",
        "## Ingestion pipeline (SciFact abstracts, LanceDB index, SQLite records)\n",
        markdown_table(
            [
                "embedder concurrency",
                "chunks",
                "seconds",
                "chunks/s",
                "tokens/s",
                "256-token chunks/s",
                "CPU cores used",
                "embedder wait s",
                "index write s",
                "query p50 / p95 ms",
                "foreign cores",
            ],
            [
                [
                    str(r["embedder concurrency"]),
                    str(r["chunks"]),
                    ms(r["seconds"], 1),
                    ms(r["chunks/s"], 1),
                    ms(r["tokens/s"], 0),
                    ms(r["256-token chunks/s"], 1),
                    ms(r["CPU cores used"], 2),
                    ms(r["waiting on the embedder, s"], 1),
                    ms(r["waiting on index writes, s"], 1),
                    f"{ms(r['query embedding during the sync, ms']['p50'], 0)} / "
                    f"{ms(r['query embedding during the sync, ms']['p95'], 0)}",
                    ms(r["foreign_cores"], 2),
                ]
                for r in results["ingestion"]
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def ceiling(raw: list[JSONDict], cores: int) -> str:
    """What the target needs against what the raw model reached here."""
    target = TARGET_CHUNKS * SEQUENCE * flops_per_token(SEQUENCE) / 1e9
    text = (
        f"FLOPs per token at 256 positions: {flops_per_token(SEQUENCE) / 1e6:.1f} M, so "
        f"{TARGET_CHUNKS} 256-token chunks/s need {target:.0f} GFLOP/s."
    )
    if not raw:
        return text
    best = max(raw, key=lambda r: r["tokens/s"])
    per_cpu = max(r["tokens per CPU second"] for r in raw)
    unloaded = per_cpu * cores
    return text + (
        f" Best here: {best['tokens/s']:,.0f} tokens/s ({best['256-token chunks/s']:.1f} "
        f"chunks/s, {best['GFLOP/s']:.0f} GFLOP/s) with {best['foreign_cores']:.2f} foreign "
        f"cores; the best CPU efficiency, {per_cpu:,.0f} tokens per CPU second, on all "
        f"{cores} cores with nothing else running would be {unloaded:,.0f} tokens/s = "
        f"{unloaded / SEQUENCE:.1f} chunks/s."
    )


async def pipeline_runs(args: argparse.Namespace) -> list[JSONDict]:
    corpus = load_corpus(args.data, args.documents)
    root = WORK_DIR / NAME
    shutil.rmtree(root, ignore_errors=True)
    runs = []
    for run, concurrency in enumerate(args.concurrency):
        row = await ingestion(root / f"run{run}", corpus, concurrency or None, args.probe_every)
        print(json.dumps(row), flush=True)
        runs.append(row)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--documents", type=int, default=300, help="SciFact abstracts to sync.")
    parser.add_argument("--seconds", type=float, default=5.0, help="Per raw configuration.")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 0],
        help="Embedder batches in flight per sync run (0: the backend's workers).",
    )
    parser.add_argument("--probe-every", type=float, default=0.5)
    parser.add_argument("--no-raw", dest="raw", action="store_false")
    args = parser.parse_args()
    results: JSONDict = {"raw_model": raw_model(args.seconds) if args.raw else []}
    results["ingestion"] = asyncio.run(pipeline_runs(args))
    facts = machine_facts(
        atrium_source(None),
        onnxruntime=package_version("onnxruntime"),
        tokenizers=package_version("tokenizers"),
        lancedb=package_version("lancedb"),
        onnxruntime_threads_default=os.cpu_count(),
    )
    data = {"results": results, "machine": facts}
    write_results(NAME, data, markdown(results, facts))


if __name__ == "__main__":
    run_main(main)
