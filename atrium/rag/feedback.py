"""Learning from feedback: chunks confirmed (or rejected) on similar past queries move.

Each piece of feedback is kept with the vector of the query it was given on. A new query
looks up past queries whose vectors are close (cosine similarity at or above
``threshold``) and turns their feedback into a boost per chunk in [-1, 1]: marked useful
+1, marked not useful -1, a thumbs up or down on the whole answer +/-0.5 for the chunks
the answer was written from. Closer past queries weigh more, linearly from 0 at the
threshold to 1 for the same query.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atrium.store.knowledge import FeedbackRecord, KnowledgeRepository

#: Weight of a thumbs up or down on the chunks an answer used, next to an explicit mark.
RATING_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class _Entry:
    vector: npt.NDArray[np.float32]
    signals: dict[str, float]


class FeedbackModel:
    """Per-collection memory of feedback, loaded from the store and kept current."""

    def __init__(self, repo: KnowledgeRepository, *, threshold: float = 0.7) -> None:
        self._repo = repo
        self._threshold = threshold
        self._entries: dict[str, list[_Entry]] = defaultdict(list)
        self._matrices: dict[str, npt.NDArray[np.float32]] = {}
        self._loaded: set[str] = set()
        self._lock = asyncio.Lock()

    async def load(self, collection: str, kb_id: str) -> None:
        """Read ``kb_id``'s feedback from the store once (later feedback arrives by add)."""
        if collection in self._loaded:
            return
        async with self._lock:
            if collection in self._loaded:
                return
            records = await self._repo.feedback(kb_id)
            self._entries[collection] = [e for r in records if (e := _entry(r)) is not None]
            self._matrices.pop(collection, None)
            self._loaded.add(collection)

    def is_loaded(self, collection: str) -> bool:
        """Whether :meth:`load` has read this collection's stored feedback."""
        return collection in self._loaded

    def add(self, collection: str, record: FeedbackRecord) -> None:
        """Learn from one new piece of feedback."""
        entry = _entry(record)
        if entry is not None:
            self._entries[collection].append(entry)
            self._matrices.pop(collection, None)

    def forget(self, collection: str) -> None:
        """Drop a collection's feedback (its knowledge base was deleted)."""
        self._entries.pop(collection, None)
        self._matrices.pop(collection, None)
        self._loaded.discard(collection)

    def boosts(self, collection: str, vector: npt.NDArray[np.float32]) -> dict[str, float]:
        """Chunk id -> boost in [-1, 1] for a query with this (unit) vector."""
        entries = self._entries.get(collection)
        if not entries:
            return {}
        matrix = self._matrices.get(collection)
        if matrix is None:
            matrix = np.stack([entry.vector for entry in entries])
            self._matrices[collection] = matrix
        similarities = matrix @ vector
        close = np.flatnonzero(similarities >= self._threshold)
        totals: dict[str, float] = defaultdict(float)
        span = max(1.0 - self._threshold, 1e-6)
        for position in close:
            weight = min((float(similarities[position]) - self._threshold) / span, 1.0)
            for chunk_id, signal in entries[position].signals.items():
                totals[chunk_id] += weight * signal
        return {chunk_id: max(-1.0, min(1.0, total)) for chunk_id, total in totals.items()}


def _entry(record: FeedbackRecord) -> _Entry | None:
    if record.query_vector is None:
        return None
    vector = np.frombuffer(record.query_vector, dtype="<f4").astype(np.float32)
    signals: dict[str, float] = {}
    if record.rating:
        used = _used_chunks(record.retrieved)
        for chunk_id in used:
            signals[chunk_id] = RATING_WEIGHT * (1.0 if record.rating > 0 else -1.0)
    for chunk_id in record.useful:
        signals[chunk_id] = 1.0
    for chunk_id in record.not_useful:
        signals[chunk_id] = -1.0
    return _Entry(vector, signals) if signals else None


def _used_chunks(retrieved: Iterable[dict[str, object]]) -> list[str]:
    return [str(item["chunk_id"]) for item in retrieved if item.get("used", True)]
