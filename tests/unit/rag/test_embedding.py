"""CatalogEmbedder over the real bundled MiniLM backend: batches in parallel, in order,
a query never queued behind a sync's batches, and a failing batch surfacing as itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from atrium.core.errors import InvalidRequestError
from atrium.core.settings import OnnxEmbeddingModel
from atrium.rag.embedding import DEFAULT_CONCURRENCY, CatalogEmbedder
from atrium.runtime.backends.onnx_embedding import OnnxEmbeddingBackend
from atrium.runtime.base import Capability
from atrium.runtime.catalog import CatalogEntry, ModelCatalog
from atrium.runtime.schema import JSON, EmbeddingRequest

LONG = " ".join(["Mitochondrial membrane potential regulates apoptosis in neurons."] * 20)
QUERY = "What regulates apoptosis?"


@dataclass
class Call:
    inputs: int
    started: float
    ended: float = 0.0


@dataclass
class RecordingBackend:
    """Wraps the real ONNX backend; records each embedding call and can fail one."""

    inner: OnnxEmbeddingBackend
    fail_call: int | None = None
    calls: list[Call] = field(default_factory=list)
    running: int = 0
    most_running: int = 0
    two_running: asyncio.Event = field(default_factory=asyncio.Event)
    name: str = "minilm"
    capabilities: frozenset[Capability] = frozenset({Capability.EMBEDDINGS})

    @property
    def parallel_calls(self) -> int:
        return self.inner.parallel_calls

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def embed(self, request: EmbeddingRequest) -> JSON:
        call = Call(len(request.inputs()), time.perf_counter())
        self.calls.append(call)
        if self.fail_call is not None and len(self.calls) == self.fail_call:
            raise InvalidRequestError("refused by the test", param="input")
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        if self.running >= 2:
            self.two_running.set()
        try:
            return await self.inner.embed(request)
        finally:
            self.running -= 1
            call.ended = time.perf_counter()


@pytest.fixture
async def onnx() -> AsyncIterator[OnnxEmbeddingBackend]:
    backend = OnnxEmbeddingBackend("minilm", OnnxEmbeddingModel())
    await backend.start()
    yield backend
    await backend.close()


def catalog_of(backend: RecordingBackend) -> ModelCatalog:
    return ModelCatalog([CatalogEntry("minilm", (), backend, 0)])  # type: ignore[arg-type]


async def test_batches_run_in_parallel_and_come_back_in_order(
    onnx: OnnxEmbeddingBackend,
) -> None:
    texts = [f"sentence number {i} about topic {i % 5}" for i in range(40)]
    recording = RecordingBackend(onnx)
    parallel = await CatalogEmbedder(catalog_of(recording), "minilm", batch=4).embed(texts)
    one_by_one = RecordingBackend(onnx)
    serial = await CatalogEmbedder(catalog_of(one_by_one), "minilm", batch=4, concurrency=1).embed(
        texts
    )
    # One worker stays free for queries: the sync uses workers - 1 of them.
    assert onnx.parallel_calls - 1 == 2
    assert recording.most_running == 2
    assert one_by_one.most_running == 1
    assert [call.inputs for call in recording.calls] == [4] * 10
    np.testing.assert_allclose(parallel, serial, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(parallel, axis=1), 1.0, atol=1e-5)
    assert float(parallel[7] @ parallel[7]) > float(parallel[7] @ parallel[8])


async def test_a_query_takes_the_free_worker_instead_of_queueing(
    onnx: OnnxEmbeddingBackend,
) -> None:
    sync = RecordingBackend(onnx)
    bulk = asyncio.create_task(
        CatalogEmbedder(catalog_of(sync), "minilm", batch=16).embed([LONG] * 64)
    )
    # Times out (and fails) if the sync never runs two batches at once.
    await asyncio.wait_for(sync.two_running.wait(), 120)
    queries = RecordingBackend(onnx)
    vector = await CatalogEmbedder(catalog_of(queries), "minilm").embed([QUERY])
    (query,) = queries.calls
    in_flight = [c for c in sync.calls if c.started <= query.started and not c.ended]
    await bulk
    assert len(in_flight) == 2
    # Had it queued for a worker, it could only have finished after one of them.
    assert query.ended < min(call.ended for call in in_flight)
    assert vector.shape == (1, 384)


async def test_a_failing_batch_raises_its_own_error_and_stops_the_rest(
    onnx: OnnxEmbeddingBackend,
) -> None:
    failing = RecordingBackend(onnx, fail_call=2)
    with pytest.raises(InvalidRequestError, match="refused by the test"):
        await CatalogEmbedder(catalog_of(failing), "minilm", batch=2).embed(["a text"] * 20)
    assert failing.running == 0
    assert len(failing.calls) < 10


async def test_remote_backends_get_the_default_concurrency_and_bad_sizes_are_refused(
    onnx: OnnxEmbeddingBackend,
) -> None:
    class Remote(RecordingBackend):
        @property
        def parallel_calls(self) -> int:
            raise AttributeError("a remote upstream does not say")

    remote = Remote(onnx)
    embedder = CatalogEmbedder(catalog_of(remote), "minilm", batch=1)
    assert (await embedder.embed([])).shape == (0, 0)
    await embedder.embed([LONG] * 6)
    assert remote.most_running == DEFAULT_CONCURRENCY == 2
    with pytest.raises(ValueError, match="at least 1"):
        CatalogEmbedder(catalog_of(remote), "minilm", batch=0)
    with pytest.raises(ValueError, match="at least 1"):
        CatalogEmbedder(catalog_of(remote), "minilm", concurrency=0)
