"""Sentence embeddings run in process by onnxruntime (the bundled MiniLM by default)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from atrium.core.errors import InvalidRequestError
from atrium.core.settings import OnnxEmbeddingModel
from atrium.runtime.base import BackendBase, Capability, Health
from atrium.runtime.embedders import MiniLMEmbedder, bundled_model_paths
from atrium.runtime.pool import WorkerPool
from atrium.runtime.schema import JSON, EmbeddingRequest, Usage

_QUEUE_LIMIT = 64


class OnnxEmbeddingBackend(BackendBase):
    """``/v1/embeddings`` from a local ONNX sentence-embedding model."""

    capabilities = frozenset({Capability.EMBEDDINGS})

    def __init__(self, name: str, spec: OnnxEmbeddingModel) -> None:
        self.name = name
        self._spec = spec
        self._embedder: MiniLMEmbedder | None = None
        self._pool: WorkerPool[MiniLMEmbedder] | None = None

    async def start(self) -> None:
        """Load the model off the event loop."""
        bundled_model, bundled_tokenizer = (None, None)
        if self._spec.model_path is None or self._spec.tokenizer_path is None:
            bundled_model, bundled_tokenizer = bundled_model_paths()
        model_path = self._spec.model_path or bundled_model
        tokenizer_path = self._spec.tokenizer_path or bundled_tokenizer
        assert model_path is not None
        assert tokenizer_path is not None
        self._embedder = await asyncio.to_thread(
            MiniLMEmbedder,
            model_path,
            tokenizer_path,
            max_tokens=self._spec.max_tokens,
            batch_size=self._spec.batch_size,
            threads=self._spec.threads_per_worker,
        )
        # One session serves every worker: InferenceSession.run is thread-safe.
        workers = [self._embedder] * self._spec.workers
        self._pool = WorkerPool(self.name, workers, _QUEUE_LIMIT)

    @property
    def parallel_calls(self) -> int:
        """Embedding calls run at once (one per worker); more wait in the queue."""
        return self._spec.workers

    async def close(self) -> None:
        """Stop the worker thread."""
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
            self._pool = None

    async def health(self) -> Health:
        """Ready once loaded."""
        return Health(ready=self._pool is not None, detail="" if self._pool else "loading")

    async def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text`` (after truncation)."""
        if self._embedder is None:
            return await super().count_tokens(text)
        return self._embedder.count_tokens(text)

    async def embed(self, request: EmbeddingRequest) -> JSON:
        """Embed every input, in order, as floats or base64 float32."""
        if self._pool is None or self._embedder is None:
            msg = f"model {self.name!r} is not loaded"
            raise RuntimeError(msg)
        texts = request.inputs()
        self._check(request, len(texts), self._embedder.dimensions)
        batch = await self._pool.run(lambda embedder: embedder.embed(texts))
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, request.encoding_format)}
            for i, v in enumerate(batch.vectors)
        ]
        usage = Usage(prompt_tokens=sum(batch.token_counts))
        return {
            "object": "list",
            "data": data,
            "model": self.name,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
        }

    def _check(self, request: EmbeddingRequest, count: int, dimensions: int) -> None:
        if count > self._spec.max_inputs:
            msg = f"at most {self._spec.max_inputs} inputs per request; got {count}"
            raise InvalidRequestError(msg, param="input")
        if request.dimensions is not None and request.dimensions != dimensions:
            msg = f"model {self.name!r} produces {dimensions} dimensions only"
            raise InvalidRequestError(msg, param="dimensions")


def _encode(vector: np.ndarray[Any, Any], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = vector.tolist()
    return values
