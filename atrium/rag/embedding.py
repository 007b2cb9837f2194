"""Text embeddings for knowledge bases, through any embedding model in the catalog.

A knowledge base names an embedding model the gateway serves: the bundled MiniLM (an
in-process ONNX backend) by default, or any OpenAI-compatible ``/v1/embeddings``
upstream. Calls go to the model's backend directly, not over HTTP, so the embedded and
the remote cases share one path and one batching policy.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from atrium.core.errors import InvalidRequestError
from atrium.runtime.base import Capability
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.embedders import bundled_model_paths
from atrium.runtime.schema import EmbeddingRequest

#: Inputs per backend call. When every worker of the local model is busy (several syncs
#: at once), a query's embedding waits behind one call at most: small calls keep queries
#: fast during ingestion at little cost (inputs are still sorted and padded per call).
DEFAULT_BATCH = 16

#: Batches of one :meth:`CatalogEmbedder.embed` call in flight at once, for a backend
#: that does not say how many calls it runs in parallel (a remote upstream).
DEFAULT_CONCURRENCY = 2


class TextEmbedder(Protocol):
    """Turns texts into unit-length float32 vectors."""

    @property
    def model(self) -> str:
        """The embedding model's public name."""
        ...

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One unit-length row per text, in order: shape ``[len(texts), dimensions]``."""
        ...


class CatalogEmbedder:
    """Embeds through the backend the catalog serves under ``model``.

    A long list goes out in batches of ``batch`` texts, ``concurrency`` of them at once.
    By default that is one less than the calls the backend runs in parallel (its
    ``parallel_calls``: the bundled model's workers, one thread each), so a sync keeps
    all workers but one busy and a query's embedding never queues behind a batch: it
    takes the free worker and shares the cores with the sync's batches at once.
    """

    def __init__(
        self,
        catalog: ModelCatalog,
        model: str,
        *,
        batch: int = DEFAULT_BATCH,
        concurrency: int | None = None,
    ) -> None:
        entry = catalog.resolve(model)
        if Capability.EMBEDDINGS not in getattr(entry.backend, "capabilities", frozenset()):
            msg = f"model {model!r} does not serve embeddings"
            raise InvalidRequestError(msg, param="embedder")
        if batch < 1 or (concurrency is not None and concurrency < 1):
            msg = f"batch and concurrency must be at least 1, got {batch} and {concurrency}"
            raise ValueError(msg)
        self._backend = entry.backend
        self._model = model
        self._batch = batch
        parallel = getattr(entry.backend, "parallel_calls", None)
        default = DEFAULT_CONCURRENCY if parallel is None else max(1, int(parallel) - 1)
        self._concurrency = concurrency or default

    @property
    def model(self) -> str:
        """The model's public name."""
        return self._model

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts`` in batches; rows are L2-normalised whatever the model returns."""
        gate = asyncio.Semaphore(self._concurrency)

        async def batch_at(start: int) -> npt.NDArray[np.float32]:
            async with gate:
                return await self._embed_batch(list(texts[start : start + self._batch]))

        tasks = [asyncio.ensure_future(batch_at(s)) for s in range(0, len(texts), self._batch)]
        try:
            parts: list[npt.NDArray[np.float32]] = await asyncio.gather(*tasks)
        except BaseException:
            # The caller sees the first error as raised (not an ExceptionGroup); the
            # other batches are cancelled and awaited, none is left running.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)

    async def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        request = EmbeddingRequest(model=self._model, input=texts, encoding_format="base64")
        response = await self._backend.embed(request)
        rows = sorted(response["data"], key=lambda item: int(item["index"]))
        return np.stack([_decode(row["embedding"]) for row in rows])


def _decode(embedding: str | list[float]) -> npt.NDArray[np.float32]:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


class TokenCounter:
    """Counts tokens for chunk sizing with the bundled MiniLM's WordPiece tokenizer.

    Remote embedding models tokenize differently; for them the count is an estimate,
    which is why chunk sizes leave headroom below a model's limit.
    """

    def __init__(self) -> None:
        _, tokenizer_path = bundled_model_paths()
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def __call__(self, text: str) -> int:
        """Tokens in ``text``, without the special tokens."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each of ``texts`` (one batched call)."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]
