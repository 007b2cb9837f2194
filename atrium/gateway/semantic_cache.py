"""Semantic response cache: a cached answer for a paraphrase of a cached prompt.

Consulted only after the exact cache missed, and only for requests the exact cache
would keep (deterministic, one choice) whose prompt is plain text. The prompt is
embedded; the most similar prompt indexed under the same *bucket* (request kind,
scope, resolved model and every other request field) answers when its cosine
similarity reaches the threshold. The index maps a prompt's vector to the exact
cache's key of its answer, so answers are stored once, in the exact cache, and
expire there.

A bucket carries a scope (a team or a key): a paraphrase is another question,
and its answer must never cross to callers who may not see the first one.

Like the exact cache, this is an optimisation and never a reason to fail: an
embedder or Redis error is logged and the request goes on as a miss.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from atrium.core.errors import AtriumError
from atrium.core.settings import SemanticCacheSettings
from atrium.gateway.cache import (
    CacheableRequest,
    CachedAnswer,
    ResponseCache,
    canonical_fields,
    is_deterministic,
    request_kind,
)
from atrium.runtime.schema import ChatCompletionRequest

log = logging.getLogger("atrium.gateway.semantic_cache")

Vector = npt.NDArray[np.float32]
# Bumped whenever the bucket material changes shape, so old vectors stop matching.
_BUCKET_VERSION = "atrium-semcache-v1"
# The prompt itself is embedded, not keyed: everything else must match exactly.
_PROMPT_FIELDS = frozenset({"messages", "prompt"})
# Roles whose messages are plain text (tool traffic is never matched by meaning).
_TEXT_ROLES = frozenset({"system", "developer", "user", "assistant"})
_EXPIRY = struct.Struct("<d")


class PromptEmbedder(Protocol):
    """Turns texts into unit-length float32 vectors (``atrium.rag``'s CatalogEmbedder)."""

    async def embed(self, texts: Sequence[str]) -> Vector:
        """One unit-length row per text."""
        ...


@dataclass(frozen=True, slots=True)
class SemanticQuery:
    """What a request is matched by: its bucket and its prompt as one text."""

    bucket: str
    text: str


def semantic_query(
    model: str, request: CacheableRequest, *, scope: str, max_chars: int
) -> SemanticQuery | None:
    """The query for ``request`` served by ``model``, or None when it cannot be matched.

    None unless the request is deterministic, its prompt is plain text (no tool
    calls or results, no image parts, one prompt) and at most ``max_chars`` long.
    """
    if not is_deterministic(request):
        return None
    text = _prompt_text(request)
    if text is None or len(text) > max_chars:
        return None
    params = canonical_fields(request, without=_PROMPT_FIELDS)
    material = orjson.dumps(
        [_BUCKET_VERSION, request_kind(request), scope, model, params],
        option=orjson.OPT_SORT_KEYS,
    )
    return SemanticQuery(hashlib.sha256(material).hexdigest(), text)


def _prompt_text(request: CacheableRequest) -> str | None:
    if not isinstance(request, ChatCompletionRequest):
        prompts = request.prompts()
        return prompts[0] if len(prompts) == 1 else None
    lines = []
    for message in request.messages:
        parts = message.content if isinstance(message.content, list) else []
        if message.role not in _TEXT_ROLES or message.tool_calls:
            return None
        if any(part.get("type") != "text" for part in parts):
            return None
        lines.append(f"{message.role}: {message.text()}")
    return "\n".join(lines)


# -- the indexes -----------------------------------------------------------------------


class PromptIndex(Protocol):
    """Prompt vectors by bucket, each pointing at an exact-cache key."""

    async def nearest(self, bucket: str, vector: Vector) -> tuple[str, float] | None:
        """The live entry most similar to ``vector``: its answer's key and the similarity."""
        ...

    async def add(self, bucket: str, vector: Vector, key: str, ttl: float) -> None:
        """Index ``vector`` for ``ttl`` seconds as the prompt of the answer under ``key``."""
        ...


@dataclass(slots=True)
class _Bucket:
    """One bucket's vectors as rows of a matrix (grown by doubling), keys and expiries."""

    dimensions: int
    vectors: Vector = field(init=False)
    expires: npt.NDArray[np.float64] = field(init=False)
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vectors = np.zeros((4, self.dimensions), dtype=np.float32)
        self.expires = np.zeros(4, dtype=np.float64)

    def nearest(self, vector: Vector, now: float) -> tuple[str, float] | None:
        count = len(self.keys)
        if count == 0 or vector.shape[0] != self.dimensions:
            return None
        scores = self.vectors[:count] @ vector
        scores[self.expires[:count] <= now] = -np.inf
        best = int(np.argmax(scores))
        score = float(scores[best])
        return None if math.isinf(score) else (self.keys[best], score)

    def add(self, vector: Vector, key: str, expires: float) -> None:
        count = len(self.keys)
        if count == self.vectors.shape[0]:
            self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
            self.expires = np.concatenate([self.expires, np.zeros_like(self.expires)])
        self.vectors[count] = vector
        self.expires[count] = expires
        self.keys.append(key)

    def remove(self, key: str) -> None:
        # The last row moves into the hole: order within a bucket does not matter.
        index, last = self.keys.index(key), len(self.keys) - 1
        self.vectors[index] = self.vectors[last]
        self.expires[index] = self.expires[last]
        self.keys[index] = self.keys[last]
        self.keys.pop()


class InProcessPromptIndex:
    """Vectors in this process: a numpy matrix per bucket, ``max_entries`` in all.

    When full, the oldest entry goes (whatever its bucket). Expired entries are
    skipped when searching and dropped as the oldest. Lives on one event loop.
    """

    def __init__(self, *, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._order)

    async def nearest(self, bucket: str, vector: Vector) -> tuple[str, float] | None:
        """The live entry of ``bucket`` most similar to ``vector``."""
        found = self._buckets.get(bucket)
        return None if found is None else found.nearest(vector, self._clock())

    async def add(self, bucket: str, vector: Vector, key: str, ttl: float) -> None:
        """Index one prompt, replacing the same key's entry; the oldest go past the bound."""
        if ttl <= 0:
            return
        self._remove(bucket, key)
        target = self._buckets.get(bucket)
        if target is None:
            target = self._buckets[bucket] = _Bucket(vector.shape[0])
        target.add(vector, key, self._clock() + ttl)
        self._order[(bucket, key)] = None
        while len(self._order) > self._max_entries:
            self._remove(*next(iter(self._order)))

    def _remove(self, bucket: str, key: str) -> None:
        if self._order.pop((bucket, key), "absent") == "absent":
            return
        target = self._buckets[bucket]
        target.remove(key)
        if not target.keys:
            del self._buckets[bucket]


class RedisPromptIndex:
    """Vectors in Redis, shared by every replica: one hash per bucket.

    Each field is an answer's key; its value the entry's expiry (epoch seconds)
    followed by the float32 vector. A search reads the bucket's hash and scores
    it here, so a bucket is bounded to ``max_entries`` (those expiring first
    go); the hash itself expires with its newest entry. Failures are logged and
    read as misses; after one, Redis is left alone for ``cooldown_s``.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        *,
        max_entries: int,
        timeout_s: float = 0.5,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max_entries = max_entries
        self._timeout_s = timeout_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._down_until = -math.inf
        self.failures = 0

    async def nearest(self, bucket: str, vector: Vector) -> tuple[str, float] | None:
        """The live entry of ``bucket`` most similar to ``vector``; None on failure."""
        entries = await self._entries(bucket)
        now, best = self._clock(), None
        for key, (expires, stored) in entries.items():
            if expires > now and stored.shape == vector.shape:
                score = float(stored @ vector)
                if best is None or score > best[1]:
                    best = (key, score)
        return best

    async def add(self, bucket: str, vector: Vector, key: str, ttl: float) -> None:
        """Index one prompt; past ``max_entries`` the entries expiring first are dropped."""
        if ttl <= 0 or time.monotonic() < self._down_until:
            return
        name, expires = self._prefix + bucket, self._clock() + ttl
        value = _EXPIRY.pack(expires) + np.asarray(vector, dtype="<f4").tobytes()
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hset(name, key, value)
                    pipe.expire(name, max(1, math.ceil(ttl)), gt=True)
                    pipe.expire(name, max(1, math.ceil(ttl)), nx=True)
                    pipe.hlen(name)
                    *_, size = await pipe.execute()
            if int(size) > self._max_entries:
                await self._trim(bucket, name)
        except (RedisError, TimeoutError) as exc:
            self._failed("add", exc)

    async def _trim(self, bucket: str, name: str) -> None:
        entries = await self._entries(bucket)
        by_expiry = sorted(entries, key=lambda k: entries[k][0])
        extra = by_expiry[: max(0, len(by_expiry) - self._max_entries)]
        if extra:
            await self._redis.hdel(name, *extra)

    async def _entries(self, bucket: str) -> dict[str, tuple[float, Vector]]:
        if time.monotonic() < self._down_until:
            return {}
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self._redis.hgetall(self._prefix + bucket)
        except (RedisError, TimeoutError) as exc:
            self._failed("read", exc)
            return {}
        entries = {}
        for field_name, value in raw.items():
            data = value.encode("latin-1") if isinstance(value, str) else value
            if len(data) <= _EXPIRY.size or (len(data) - _EXPIRY.size) % 4:
                continue  # not ours: skipped, never a reason to fail
            key = field_name.decode() if isinstance(field_name, bytes) else field_name
            (expires,) = _EXPIRY.unpack_from(data)
            entries[key] = (expires, np.frombuffer(data, dtype="<f4", offset=_EXPIRY.size))
        return entries

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        self._down_until = time.monotonic() + self._cooldown_s
        log.warning(
            "semantic cache: Redis %s failed (%s); skipping it for %.1f s",
            what,
            type(exc).__name__,
            self._cooldown_s,
        )


# -- the cache -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SemanticLookup:
    """One lookup: the answer found (if any), and what to index the new answer under."""

    query: SemanticQuery
    vector: Vector
    answer: CachedAnswer | None = None
    similarity: float = 0.0


class SemanticCache:
    """Finds cached answers by prompt similarity; indexes new answers' prompts."""

    def __init__(
        self,
        embedder: PromptEmbedder,
        index: PromptIndex,
        answers: ResponseCache,
        settings: SemanticCacheSettings,
    ) -> None:
        self._embedder = embedder
        self._index = index
        self._answers = answers
        self._threshold = settings.threshold
        self._max_chars = settings.max_prompt_chars

    async def lookup(
        self, model: str, request: CacheableRequest, *, scope: str
    ) -> SemanticLookup | None:
        """A lookup for ``request`` (its ``answer`` set on a hit); None when it cannot apply."""
        query = semantic_query(model, request, scope=scope, max_chars=self._max_chars)
        if query is None:
            return None
        try:
            vector = (await self._embedder.embed([query.text]))[0]
        except AtriumError as exc:
            log.warning("semantic cache: embedding the prompt failed (%s)", type(exc).__name__)
            return None
        found = await self._index.nearest(query.bucket, vector)
        if found is None or found[1] < self._threshold:
            return SemanticLookup(query, vector)
        answer = await self._answers.get(found[0])
        if answer is None:
            return SemanticLookup(query, vector)  # the answer expired before its vector
        return SemanticLookup(query, vector, replace(answer, replayed=True), found[1])

    async def remember(self, lookup: SemanticLookup, key: str, ttl: float) -> None:
        """Index the prompt of the answer just stored under ``key``."""
        await self._index.add(lookup.query.bucket, lookup.vector, key, ttl)


def build_prompt_index(
    settings: SemanticCacheSettings,
    backend: str,
    redis: aioredis.Redis | None = None,
    *,
    timeout_s: float = 0.5,
    cooldown_s: float = 5.0,
) -> PromptIndex:
    """The index beside the exact cache's ``backend``: in process, or in Redis."""
    if backend != "redis":
        return InProcessPromptIndex(max_entries=settings.max_entries)
    if redis is None:
        msg = "the redis semantic cache needs a Redis client"
        raise ValueError(msg)
    return RedisPromptIndex(
        redis,
        settings.redis_prefix,
        max_entries=settings.max_entries,
        timeout_s=timeout_s,
        cooldown_s=cooldown_s,
    )
