"""Exact-match response cache for deterministic chat and text completions.

Only requests whose answer is reproducible are cached: ``temperature`` 0 or a
``seed``, and one choice. The key is a SHA-256 over a canonical JSON of every
request field that can change the answer, so a streamed and a plain request for
the same thing share one entry, and each can be served from the other's form:
a hit is replayed as SSE to a streaming client and as JSON to a plain one.

The cache is an optimisation and never a reason to fail: a Redis error on a
read is a miss and on a write is skipped, each logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from atrium.bus.base import raise_if_cancel_requested
from atrium.core.settings import CacheSettings
from atrium.runtime.base import StreamEvent
from atrium.runtime.schema import JSON, ChatCompletionRequest, CompletionRequest, Usage

log = logging.getLogger("atrium.gateway.cache")

MIB = 1024 * 1024
# The response header that tells a client its answer was replayed from the cache.
CACHE_HEADER = "x-atrium-cache"
#: ``hit`` or ``miss`` for the current request when the cache applied (read for the header).
cache_status: ContextVar[str | None] = ContextVar("atrium_cache_status", default=None)

# Bumped whenever the key material changes shape, so old entries simply stop matching.
_KEY_VERSION = "atrium-cache-v1"
# Fields that change how an answer is delivered or attributed, never what it says.
# ``model`` is left out because the resolved name is keyed instead of the alias asked for.
_NOT_IN_KEY = frozenset({"model", "stream", "stream_options", "user"})
# Bumped whenever the stored value changes shape; other versions read as misses.
_VALUE_VERSION = 1
# Sorted keys make the key independent of the order a client wrote its JSON in.
_SORTED = orjson.OPT_SORT_KEYS

CacheBackend = Literal["off", "inprocess", "redis"]
CacheableRequest = ChatCompletionRequest | CompletionRequest


def cache_key(model: str, request: CacheableRequest, *, scope: str = "") -> str | None:
    """The cache key of ``request`` served by ``model`` (its resolved name), or None.

    None unless the answer is reproducible (``temperature`` 0 or a ``seed``) and
    ``n`` is 1. ``scope`` partitions the cache (e.g. per tenant) when answers must
    not be shared across callers. Fields the request schema does not know are
    keyed too: one that might change the answer must never produce a false hit.
    """
    if not is_deterministic(request):
        return None
    material = orjson.dumps(
        [_KEY_VERSION, request_kind(request), scope, model, canonical_fields(request)],
        option=_SORTED,
    )
    return hashlib.sha256(material).hexdigest()


def is_deterministic(request: CacheableRequest) -> bool:
    """Whether the answer is reproducible: one choice, ``temperature`` 0 or a ``seed``."""
    return request.n == 1 and (request.temperature == 0 or request.seed is not None)


def request_kind(request: CacheableRequest) -> str:
    """``chat`` or ``completion``: the two never share an entry."""
    return "chat" if isinstance(request, ChatCompletionRequest) else "completion"


def canonical_fields(request: CacheableRequest, *, without: frozenset[str] = frozenset()) -> JSON:
    """The request fields that can change its answer, normalised, minus ``without``."""
    fields = request.model_dump(mode="json", exclude=set(_NOT_IN_KEY | without))
    # ``"stop": "x"`` and ``"stop": ["x"]`` ask the same; an absent field equals null.
    fields["stop"] = request.stop_list() or None
    return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """One cached answer, in the form it was produced in.

    Either ``body`` (a whole non-streamed ``chat.completion`` / ``text_completion``)
    or ``events`` (the streamed chunk payloads, without the final usage-only
    chunk) is set. ``replayed`` is True on answers read back from a cache: the
    caller then sets ``x-atrium-cache: hit``.
    """

    body: JSON | None = None
    events: tuple[bytes, ...] = ()
    usage: Usage = field(default_factory=Usage)
    created: int = 0
    replayed: bool = False

    def __post_init__(self) -> None:
        if (self.body is None) == (not self.events):
            msg = "a CachedAnswer holds either a body or stream events"
            raise ValueError(msg)

    @classmethod
    def from_body(cls, body: JSON) -> CachedAnswer:
        """Wrap a non-streamed answer."""
        return cls(
            body=body,
            usage=Usage.from_openai(body.get("usage")),
            created=int(body.get("created") or 0),
        )

    def as_json(self) -> JSON:
        """The answer as a non-streamed body (a fresh copy the caller may change)."""
        if self.body is not None:
            copy: JSON = orjson.loads(orjson.dumps(self.body))
            return copy
        return _body_from_chunks([orjson.loads(e) for e in self.events], self.usage, self.created)

    def as_events(self) -> tuple[bytes, ...]:
        """The answer as chunk payloads, without the usage-only chunk."""
        if self.body is None:
            return self.events
        return tuple(orjson.dumps(chunk) for chunk in _chunks_from_body(self.body))

    def usage_chunk(self) -> bytes:
        """The final usage-only chunk (``choices: []``) of a streamed replay."""
        head = self._head()
        chunk_object = "text_completion" if _is_completion(head) else "chat.completion.chunk"
        final = {**_chunk_head(head, chunk_object), "choices": [], "usage": self.usage.to_openai()}
        return orjson.dumps(final)

    async def replay(self) -> AsyncIterator[StreamEvent]:
        """The answer as the stream events a backend would yield, usage event last.

        Plugs into the service's SSE path in place of ``backend.chat_stream(...)``.
        """
        # All in memory: every event, and the end, follows at once (one write downstream).
        for payload in self.as_events():
            yield StreamEvent(payload, more=True)
        yield StreamEvent(self.usage_chunk(), self.usage, usage_only=True, more=True)

    def size(self) -> int:
        """Approximate bytes the answer takes (its serialised form)."""
        if self.body is not None:
            return len(orjson.dumps(self.body))
        return sum(len(e) for e in self.events)

    def to_bytes(self) -> bytes:
        """The answer as stored outside the process."""
        # Chunk payloads are JSON, hence UTF-8 text: stored as strings, not base64.
        return orjson.dumps(
            {
                "v": _VALUE_VERSION,
                "body": self.body,
                "events": [e.decode() for e in self.events],
                "usage": self.usage.to_openai(),
                "created": self.created,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedAnswer:
        """Read what ``to_bytes`` wrote; raises ``ValueError`` on anything else."""
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("v") != _VALUE_VERSION:
                raise ValueError("not a cached answer of this version")
            return cls(
                body=data["body"],
                events=tuple(e.encode() for e in data["events"]),
                usage=Usage.from_openai(data["usage"]),
                created=int(data["created"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError("not a cached answer") from exc

    def _head(self) -> JSON:
        if self.body is not None:
            return self.body
        first: JSON = orjson.loads(self.events[0])
        return first


def _is_completion(head: JSON) -> bool:
    return str(head.get("object", "")).startswith("text_completion")


def _chunk_head(head: JSON, chunk_object: str) -> JSON:
    """The fields every chunk of one answer repeats."""
    out: JSON = {
        "id": head.get("id", ""),
        "object": chunk_object,
        "created": head.get("created", 0),
        "model": head.get("model", ""),
    }
    if head.get("system_fingerprint") is not None:
        out["system_fingerprint"] = head["system_fingerprint"]
    return out


# -- stream events -> one body ---------------------------------------------------------


@dataclass(slots=True)
class _ChoiceParts:
    """What the chunks of one choice add up to."""

    texts: list[str] = field(default_factory=list)
    role: str = "assistant"
    finish_reason: str | None = None
    tool_calls: dict[int, JSON] = field(default_factory=dict)

    def add_chat(self, choice: JSON) -> None:
        delta: JSON = choice.get("delta") or {}
        self.role = delta.get("role") or self.role
        if isinstance(delta.get("content"), str):
            self.texts.append(delta["content"])
        for call in delta.get("tool_calls") or []:
            self._add_tool_call(call)
        self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def add_text(self, choice: JSON) -> None:
        if isinstance(choice.get("text"), str):
            self.texts.append(choice["text"])
        self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def _add_tool_call(self, call: JSON) -> None:
        # Streamed tool calls arrive as fragments keyed by index: id, type and name
        # once, the arguments string in pieces.
        slot = self.tool_calls.setdefault(
            int(call.get("index", 0)), {"type": "function", "function": {"arguments": ""}}
        )
        for name in ("id", "type"):
            if call.get(name):
                slot[name] = call[name]
        function: JSON = call.get("function") or {}
        if function.get("name"):
            slot["function"]["name"] = function["name"]
        slot["function"]["arguments"] += function.get("arguments") or ""

    def chat_choice(self, index: int) -> JSON:
        message: JSON = {"role": self.role, "content": "".join(self.texts)}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
            message["content"] = message["content"] or None
        return {
            "index": index,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }

    def text_choice(self, index: int) -> JSON:
        return {
            "index": index,
            "text": "".join(self.texts),
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }


def _body_from_chunks(chunks: list[JSON], usage: Usage, created: int) -> JSON:
    completion = _is_completion(chunks[0])
    parts: dict[int, _ChoiceParts] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            acc = parts.setdefault(int(choice.get("index", 0)), _ChoiceParts())
            if completion:
                acc.add_text(choice)
            else:
                acc.add_chat(choice)
    body = _chunk_head(chunks[0], "text_completion" if completion else "chat.completion")
    body["created"] = created or body["created"]
    body["choices"] = [
        acc.text_choice(i) if completion else acc.chat_choice(i) for i, acc in sorted(parts.items())
    ]
    body["usage"] = usage.to_openai()
    return body


# -- one body -> stream events ---------------------------------------------------------


def _chunks_from_body(body: JSON) -> list[JSON]:
    completion = _is_completion(body)
    head = _chunk_head(body, "text_completion" if completion else "chat.completion.chunk")
    choices: list[JSON] = []
    for choice in body.get("choices") or []:
        choices.extend(_text_choices(choice) if completion else _chat_choices(choice))
    return [{**head, "choices": [choice]} for choice in choices]


def _chat_choices(choice: JSON) -> list[JSON]:
    """A role chunk, one content chunk (text and tool calls), a finish chunk."""
    index = choice.get("index", 0)
    message: JSON = choice.get("message") or {}
    content: JSON = {}
    if message.get("content"):
        content["content"] = message["content"]
    if message.get("tool_calls"):
        content["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
    deltas = [{"role": message.get("role", "assistant"), "content": ""}]
    deltas += [content] if content else []
    pieces = [{"index": index, "delta": d, "logprobs": None, "finish_reason": None} for d in deltas]
    finish = choice.get("finish_reason") or "stop"
    return [*pieces, {"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}]


def _text_choices(choice: JSON) -> list[JSON]:
    """One text chunk, then a finish chunk."""
    index = choice.get("index", 0)
    finish = choice.get("finish_reason") or "stop"
    return [
        {"index": index, "text": choice.get("text") or "", "logprobs": None, "finish_reason": None},
        {"index": index, "text": "", "logprobs": None, "finish_reason": finish},
    ]


# -- recording a stream ----------------------------------------------------------------


class StreamRecorder:
    """Collects a stream's chunk payloads as they pass; ``answer()`` at the end.

    Feed it every payload the client is sent or would be sent (the usage-only
    chunk included, even when the client did not ask for it). The answer is
    produced only for a stream that completed normally: every choice finished
    and no error payload. Checks happen once in ``answer()``, not per chunk,
    so recording costs an append on the hot path.
    """

    def __init__(self, *, max_bytes: int = 4 * MIB) -> None:
        self._payloads: list[bytes] = []
        self._bytes = 0
        self._max_bytes = max_bytes
        self._spoiled = False

    def feed(self, payload: bytes) -> None:
        """Record one chunk payload (the JSON after ``data: ``)."""
        if self._spoiled:
            return
        self._bytes += len(payload)
        if self._bytes > self._max_bytes:
            self.abandon()  # too big to cache: stop holding it in memory
            return
        self._payloads.append(payload)

    def abandon(self) -> None:
        """The stream failed or was cut short: nothing will be cached."""
        self._spoiled = True
        self._payloads.clear()

    def answer(self) -> CachedAnswer | None:
        """The recorded answer, or None unless the stream completed normally."""
        if self._spoiled or not self._payloads:
            return None
        try:
            chunks = [orjson.loads(p) for p in self._payloads]
        except orjson.JSONDecodeError:
            return None
        if not all(isinstance(c, dict) and "error" not in c for c in chunks):
            return None
        return _complete_answer(self._payloads, chunks)


def _complete_answer(payloads: list[bytes], chunks: list[JSON]) -> CachedAnswer | None:
    usage = Usage()
    events: list[bytes] = []
    seen: set[int] = set()
    finished: set[int] = set()
    for payload, chunk in zip(payloads, chunks, strict=True):
        if chunk.get("usage"):
            usage = Usage.from_openai(chunk["usage"])
        choices = chunk.get("choices") or []
        if not choices:
            continue  # the usage-only chunk: rebuilt from ``usage`` on replay
        events.append(payload)
        for choice in choices:
            seen.add(int(choice.get("index", 0)))
            if choice.get("finish_reason"):
                finished.add(int(choice.get("index", 0)))
    if not events or seen != finished:
        return None
    return CachedAnswer(events=tuple(events), usage=usage, created=int(chunks[0].get("created", 0)))


# -- the stores ------------------------------------------------------------------------


class ResponseCache(Protocol):
    """Where cached answers live."""

    async def get(self, key: str) -> CachedAnswer | None:
        """The answer stored under ``key`` (marked ``replayed``), or None."""

    async def put(self, key: str, answer: CachedAnswer, ttl: float) -> None:
        """Store ``answer`` for ``ttl`` seconds; too-big answers are skipped."""

    async def close(self) -> None:
        """Release what the cache holds."""


@dataclass(slots=True)
class _Entry:
    answer: CachedAnswer
    size: int
    expires: float


class InProcessResponseCache:
    """An LRU cache in this process, bounded by entries and bytes, with per-entry TTL.

    Not thread-safe: it lives on one event loop. Expired entries are dropped when
    read, or when the LRU order reaches them.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 256 * MIB,
        max_entry_bytes: int = 4 * MIB,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._clock = clock
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes held by cached answers."""
        return self._bytes

    async def get(self, key: str) -> CachedAnswer | None:
        """The live answer under ``key``, now the most recently used; else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return replace(entry.answer, replayed=True)

    async def put(self, key: str, answer: CachedAnswer, ttl: float) -> None:
        """Store ``answer``, evicting the least recently used past the bounds."""
        size = answer.size()
        if size > self._max_entry_bytes or ttl <= 0:
            return
        self._drop(key)
        self._entries[key] = _Entry(replace(answer, replayed=False), size, self._clock() + ttl)
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    async def close(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size


class RedisResponseCache:
    """Cached answers in Redis, shared by every replica; Redis expires them.

    Any Redis failure (down, slower than ``timeout_s``) is logged and counted in
    ``failures``, and the request goes on as a miss. For ``cooldown_s`` after
    one, the cache is not consulted at all: requests must not each wait out the
    timeout while Redis is down. A value it cannot read is a miss too. The
    client is borrowed: ``close`` leaves it open for its owner.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "atrium:cache:",
        *,
        max_entry_bytes: int = 4 * MIB,
        timeout_s: float = 0.5,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max_entry_bytes = max_entry_bytes
        self._timeout_s = timeout_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._down_until = -math.inf
        self.failures = 0

    async def get(self, key: str) -> CachedAnswer | None:
        """The answer under ``key``, or None (also when Redis fails)."""
        if self._cooling_down():
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self._redis.get(self._prefix + key)
        except (RedisError, TimeoutError) as exc:
            self._failed("get", exc)
            return None
        # redis-py can swallow a cancellation on Python 3.11 (see bus.cancel_and_wait):
        # a client that went away must not go on to cost a model call.
        raise_if_cancel_requested()
        if raw is None:
            return None
        try:
            # A client made with decode_responses=True hands back text.
            value = raw.encode() if isinstance(raw, str) else raw
            return replace(CachedAnswer.from_bytes(value), replayed=True)
        except ValueError:
            log.warning("response cache: the value under %s is not a cached answer", key)
            return None

    async def put(self, key: str, answer: CachedAnswer, ttl: float) -> None:
        """Store ``answer`` with ``EX`` (whole seconds, rounded up); failures are skipped."""
        value = answer.to_bytes()
        if len(value) > self._max_entry_bytes or ttl <= 0 or self._cooling_down():
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.set(self._prefix + key, value, ex=max(1, math.ceil(ttl)))
        except (RedisError, TimeoutError) as exc:
            self._failed("put", exc)

    async def close(self) -> None:
        """Nothing to release: the Redis client belongs to the platform."""

    def _cooling_down(self) -> bool:
        return self._clock() < self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        self._down_until = self._clock() + self._cooldown_s
        log.warning(
            "response cache: Redis %s failed (%s); skipping the cache for %.1f s",
            what,
            _name(exc),
            self._cooldown_s,
        )


def _name(exc: Exception) -> str:
    return type(exc).__name__


def build_response_cache(
    settings: CacheSettings, redis: aioredis.Redis | None = None
) -> ResponseCache | None:
    """The cache ``settings`` ask for, or None when caching is off."""
    if settings.backend == "off":
        return None
    if settings.backend == "inprocess":
        return InProcessResponseCache(
            max_entries=settings.max_entries,
            max_bytes=settings.max_bytes,
            max_entry_bytes=settings.max_entry_bytes,
        )
    if redis is None:
        msg = "the redis response cache needs a Redis client"
        raise ValueError(msg)
    return RedisResponseCache(
        redis,
        settings.redis_prefix,
        max_entry_bytes=settings.max_entry_bytes,
        timeout_s=settings.redis_timeout_seconds,
        cooldown_s=settings.redis_cooldown_seconds,
    )
