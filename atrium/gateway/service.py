"""The inference service behind the OpenAI-compatible routes.

One path for every endpoint: authenticate, parse, resolve the model, authorize,
reserve limits, call the backend, then record usage (metrics, limiter, events)
off the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import orjson
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import BaseModel

from atrium.bus import EventPublisher, RequestCompleted
from atrium.core.errors import (
    AtriumError,
    LimiterUnavailableError,
    RateLimitError,
    UnsupportedError,
    status_of,
)
from atrium.core.http import parse_body
from atrium.core.settings import CacheSettings, ModelPrice
from atrium.gateway.auth import KeyAuthenticator, Principal, authorize_model
from atrium.gateway.budgets import Budget, SpendLedger, budgets_of
from atrium.gateway.cache import (
    CACHE_HEADER,
    CachedAnswer,
    ResponseCache,
    StreamRecorder,
    cache_key,
    cache_status,
)
from atrium.gateway.guardrails import Guardrails
from atrium.gateway.limits import Limits, RateLimiter, Reservation, Subject
from atrium.gateway.semantic_cache import SemanticCache, SemanticLookup
from atrium.gateway.transcript import Transcript, TranscriptSink
from atrium.observability.metrics import GatewayMetrics
from atrium.observability.propagation import recording_tracer
from atrium.runtime.base import Capability, StreamEvent
from atrium.runtime.catalog import CatalogEntry, ModelCatalog
from atrium.runtime.routing import (
    failed_targets,
    request_headers,
    routed_to,
    served_by,
    traced_call,
    traced_stream,
)
from atrium.runtime.schema import (
    JSON,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Usage,
)

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")
requests_log = logging.getLogger("atrium.requests")
#: Atrium's own time on the current request, in ms (read for ``x-atrium-overhead-ms``).
overhead_ms: ContextVar[float | None] = ContextVar("atrium_overhead_ms", default=None)
G = TypeVar("G", ChatCompletionRequest, CompletionRequest)

#: Serves chat completions for model names under a prefix (``rag/<knowledge base>``).
ChatDelegate = Callable[[str | None, bytes], Awaitable["JSON | Sse"]]
Sse = AsyncIterator[bytes]

_DONE = b"data: [DONE]\n\n"
# x-atrium-cache values -> the metric's result label.
_CACHE_LABELS = {"hit": "hit", "miss": "miss", "semantic-hit": "semantic_hit"}
# The status recorded for a stream the client closed before it ended (nginx's 499).
CLIENT_CLOSED = 499


class Endpoint(Enum):
    """The inference endpoints, with the capability each needs."""

    CHAT = ("chat.completions", Capability.CHAT)
    COMPLETIONS = ("completions", Capability.COMPLETIONS)
    EMBEDDINGS = ("embeddings", Capability.EMBEDDINGS)

    @property
    def label(self) -> str:
        """The name used in metrics and events."""
        return self.value[0]

    @property
    def capability(self) -> Capability:
        """What the model must serve."""
        return self.value[1]


@dataclass(slots=True)
class _Call:
    """One request in flight."""

    endpoint: Endpoint
    started: float
    principal: Principal | None = None
    model: str = "unknown"
    reservation: Reservation | None = None
    stream: bool = False
    cached: bool = False
    budgets: tuple[Budget, ...] = ()
    model_seconds: float = 0.0  # time inside the backend: the rest is Atrium's overhead
    first_token_at: float = 0.0
    failures: list[str] = field(default_factory=list)  # route targets that failed
    transcript: Transcript | None = None  # the text, when the audit trail keeps it
    semantic: SemanticLookup | None = None  # the prompt's vector, to index its new answer
    router: Span | None = None  # the router span, when the request is traced and sampled

    def overhead(self) -> float:
        """Seconds Atrium itself has spent on the request so far."""
        return max(0.0, time.perf_counter() - self.started - self.model_seconds)


class InferenceService:
    """Serves chat, completions and embeddings for authenticated callers."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        auth: KeyAuthenticator,
        limiter: RateLimiter,
        metrics: GatewayMetrics,
        publisher: EventPublisher,
        default_limits: Limits,
        model_limits: Mapping[str, Limits] | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        guardrails: Guardrails | None = None,
        cache: ResponseCache | None = None,
        cache_settings: CacheSettings | None = None,
        ledger: SpendLedger | None = None,
        transcripts: TranscriptSink | None = None,
        semantic_cache: SemanticCache | None = None,
    ) -> None:
        self._catalog = catalog
        self._auth = auth
        self._limiter = limiter
        self._metrics = metrics
        self._publisher = publisher
        self._default_limits = default_limits
        self._model_limits = dict(model_limits or {})
        self._prices = dict(prices or {})
        self._guardrails = guardrails if guardrails is not None and guardrails.active else None
        self._cache = cache
        self._cache_settings = cache_settings or CacheSettings()
        self._ledger = ledger
        self._transcripts = transcripts
        self._semantic = semantic_cache if cache is not None else None
        self._semantic_by_key = self._cache_settings.semantic.scope == "key"
        self._background: set[asyncio.Task[None]] = set()
        self._delegates: dict[str, ChatDelegate] = {}

    def delegate(self, prefix: str, handler: ChatDelegate) -> None:
        """Send chat completions for models named ``<prefix>...`` to ``handler``.

        The handler authenticates and answers itself; it usually calls :meth:`chat`
        again with a served model, which is where limits, usage and metrics apply.
        """
        self._delegates[prefix] = handler

    def _delegate_for(self, body: bytes) -> ChatDelegate | None:
        # A bytes search first, so ordinary requests pay no extra JSON parse.
        for prefix, handler in self._delegates.items():
            if b'"' + prefix.encode() in body:
                model = _model_name(body)
                if model is not None and model.startswith(prefix):
                    return handler
        return None

    async def chat(self, authorization: str | None, body: bytes) -> JSON | Sse:
        """``POST /v1/chat/completions``: a completion object or an SSE stream."""
        delegate = self._delegate_for(body) if self._delegates else None
        if delegate is not None:
            return await delegate(authorization, body)
        call = _Call(Endpoint.CHAT, time.perf_counter())
        return await self._guard(call, self._chat(call, authorization, body))

    async def chat_as(self, principal: Principal, body: bytes) -> JSON | Sse:
        """A chat completion for an already verified key (a workflow run acting as its key)."""
        call = _Call(Endpoint.CHAT, time.perf_counter())
        return await self._guard(call, self._chat(call, principal, body))

    async def complete(self, authorization: str | None, body: bytes) -> JSON | Sse:
        """``POST /v1/completions``."""
        call = _Call(Endpoint.COMPLETIONS, time.perf_counter())
        return await self._guard(call, self._complete(call, authorization, body))

    async def embed(self, authorization: str | None, body: bytes) -> JSON:
        """``POST /v1/embeddings``."""
        call = _Call(Endpoint.EMBEDDINGS, time.perf_counter())
        result = await self._guard(call, self._embed(call, authorization, body))
        assert isinstance(result, dict)
        return result

    async def _chat(
        self, call: _Call, authorization: str | Principal | None, body: bytes
    ) -> JSON | Sse:
        request, entry = await self._admit(call, authorization, body, ChatCompletionRequest)
        if request.tools and Capability.TOOLS not in entry.backend.capabilities:
            msg = f"model {request.model!r} does not support tools"
            raise UnsupportedError(msg, param="tools")
        request = self._guardrails.check_request(request) if self._guardrails else request
        backend = entry.backend
        return await self._generate(call, request, entry, backend.chat, backend.chat_stream)

    async def _complete(self, call: _Call, authorization: str | None, body: bytes) -> JSON | Sse:
        request, entry = await self._admit(call, authorization, body, CompletionRequest)
        request = self._guardrails.check_request(request) if self._guardrails else request
        backend = entry.backend
        return await self._generate(call, request, entry, backend.complete, backend.complete_stream)

    async def _generate(
        self,
        call: _Call,
        request: G,
        entry: CatalogEntry,
        answer: Callable[[G], Awaitable[JSON]],
        stream: Callable[[G], AsyncIterator[StreamEvent]],
    ) -> JSON | Sse:
        """Answer from the cache, or from the model (then keep the answer if cacheable)."""
        key = self._cache_key(call, entry.name, request)
        hit = await self._cache.get(key) if self._cache is not None and key else None
        if key is not None:
            if hit is None and self._semantic is not None:
                hit = await self._semantic_hit(call, entry.name, request)
            status = "semantic-hit" if hit and call.semantic else "hit" if hit else "miss"
            cache_status.set(status)
            self._metrics.cache_result(_CACHE_LABELS[status])
        call.cached = hit is not None
        if self._transcripts is not None:
            call.transcript = Transcript(request, self._transcripts.max_text_chars)
        if request.stream:
            events = (
                hit.replay() if hit else traced_stream(entry.name, entry.backend, stream(request))
            )
            return await self._open_stream(
                call, events, include_usage=request.include_usage, keep_as=None if hit else key
            )
        if hit:
            body = hit.as_json()
        else:
            body = await _timed(call, traced_call(entry.name, entry.backend, answer(request)))
        body = self._guardrails.check_answer(body) if self._guardrails else body
        if call.transcript is not None:
            call.transcript.body = body
        if key is not None and hit is None:
            self._keep(key, CachedAnswer.from_body(body), call.semantic)
        return self._finish(call, body)

    def _cache_key(
        self, call: _Call, model: str, request: ChatCompletionRequest | CompletionRequest
    ) -> str | None:
        """The cache key when caching applies: on, wanted, deterministic.

        A key whose ``cache`` is false is never cached; otherwise the request's
        ``x-atrium-cache`` header decides, then the key's choice, then the setting.
        """
        if self._cache is None:
            return None
        choice = call.principal.key.cache if call.principal is not None else None
        if choice is False:
            return None
        headers = request_headers.get() or {}
        wanted = headers.get(CACHE_HEADER, "").lower()
        default = self._cache_settings.by_default if choice is None else choice
        if wanted == "off" or (wanted != "on" and not default):
            return None
        return cache_key(model, request)

    async def _semantic_hit(
        self, call: _Call, model: str, request: ChatCompletionRequest | CompletionRequest
    ) -> CachedAnswer | None:
        """After an exact miss: the answer to the most similar prompt in the caller's scope.

        On a miss, ``call.semantic`` keeps the prompt's vector for indexing the new answer.
        """
        assert self._semantic is not None
        assert call.principal is not None
        key = call.principal.key
        team = None if self._semantic_by_key else key.team
        scope = f"team:{team.id}" if team is not None else f"key:{key.id}"
        call.semantic = await self._semantic.lookup(model, request, scope=scope)
        return call.semantic.answer if call.semantic is not None else None

    def _keep(self, key: str, answer: CachedAnswer, semantic: SemanticLookup | None) -> None:
        """Store an answer in the cache off the hot path (and index its prompt's meaning)."""
        if self._cache is not None:
            self._background_task(self._store(key, answer, semantic))

    async def _store(self, key: str, answer: CachedAnswer, semantic: SemanticLookup | None) -> None:
        assert self._cache is not None
        ttl = self._cache_settings.ttl_seconds
        await self._cache.put(key, answer, ttl)
        if semantic is not None and self._semantic is not None:
            await self._semantic.remember(semantic, key, ttl)

    async def _embed(self, call: _Call, authorization: str | None, body: bytes) -> JSON:
        request, entry = await self._admit(call, authorization, body, EmbeddingRequest)
        work = traced_call(entry.name, entry.backend, entry.backend.embed(request))
        return self._finish(call, await _timed(call, work))

    async def _admit(
        self, call: _Call, authorization: str | Principal | None, body: bytes, schema: type[R]
    ) -> tuple[R, CatalogEntry]:
        """Authenticate, parse, resolve, authorize and reserve: everything before the model."""
        call.principal = (
            authorization
            if isinstance(authorization, Principal)
            else await self._auth.authenticate(authorization)
        )
        request = parse_body(schema, body)
        model_name: str = getattr(request, "model", "")
        entry = self._catalog.resolve(model_name)
        call.model = entry.name
        served_by.set(entry.name)  # routes and replica sets name the deployment more precisely
        routed_to.set(None)
        failed_targets.set(call.failures)
        call.stream = bool(getattr(request, "stream", False))
        authorize_model(call.principal, model_name, entry.name)
        self._check_capability(entry, call.endpoint, model_name)
        estimate = _estimate(request, entry.backend.completion_estimate)
        call.reservation = await self._limiter.reserve(
            self._subjects(call.principal, entry.name), estimate
        )
        self._metrics.in_flight_of(call.model).inc()
        call.budgets = budgets_of(call.principal.key) if self._ledger is not None else ()
        if call.budgets and self._ledger is not None:
            await self._ledger.check(call.budgets)
        return request, entry

    def _check_capability(self, entry: CatalogEntry, endpoint: Endpoint, requested: str) -> None:
        if endpoint.capability not in entry.backend.capabilities:
            msg = f"model {requested!r} does not support {endpoint.label}"
            raise UnsupportedError(msg, param="model")

    def _subjects(self, principal: Principal, model: str) -> list[Subject]:
        """Whose limits a request counts against: its key, the key's team, the model."""
        key, defaults = principal.key, self._default_limits
        subjects = [
            Subject(
                f"key:{key.id}",
                f"key {key.name!r}",
                Limits(
                    rpm=key.rpm if key.rpm is not None else defaults.rpm,
                    tpm=key.tpm if key.tpm is not None else defaults.tpm,
                    parallel=key.max_parallel
                    if key.max_parallel is not None
                    else defaults.parallel,
                ),
            )
        ]
        if key.team is not None:
            team = key.team
            limits = Limits(rpm=team.rpm, tpm=team.tpm, parallel=team.max_parallel)
            subjects.append(Subject(f"team:{team.id}", f"team {team.name!r}", limits))
        model_limits = self._model_limits.get(model)
        if model_limits is not None:
            subjects.append(Subject(f"model:{model}", f"model {model!r}", model_limits))
        return subjects

    async def _guard(self, call: _Call, work: Awaitable[JSON | Sse]) -> JSON | Sse:
        """Record any failure before the answer starts, then let it propagate."""
        try:
            return await work
        except AtriumError as exc:
            if isinstance(exc, RateLimitError | LimiterUnavailableError):
                self._metrics.limit_rejections.labels(exc.code or "limited").inc()
            self._record(call, status_of(exc), Usage())
            raise

    def _finish(self, call: _Call, body: JSON) -> JSON:
        overhead_ms.set(call.overhead() * 1000.0)
        self._record(call, 200, Usage.from_openai(body.get("usage")))
        return body

    async def _open_stream(
        self,
        call: _Call,
        events: AsyncIterator[StreamEvent],
        *,
        include_usage: bool,
        keep_as: str | None = None,
    ) -> Sse:
        """Wait for the first event, so that errors before it are plain HTTP errors."""
        first = await _timed(call, anext(aiter(events), None))
        call.first_token_at = time.perf_counter()
        self._metrics.observe_first_token(
            call.model, call.endpoint.label, call.first_token_at - call.started
        )
        overhead_ms.set(call.overhead() * 1000.0)
        return self._sse(call, first, events, include_usage=include_usage, keep_as=keep_as)

    async def _sse(
        self,
        call: _Call,
        first: StreamEvent | None,
        events: AsyncIterator[StreamEvent],
        *,
        include_usage: bool,
        keep_as: str | None,
    ) -> Sse:
        usage, status = Usage(), CLIENT_CLOSED
        guard = self._guardrails.stream_guard() if self._guardrails else None
        max_bytes = self._cache_settings.max_entry_bytes
        recorder = StreamRecorder(max_bytes=max_bytes) if keep_as else None
        # What keeps the answer's text: the cache's recorder, the audit transcript.
        sinks = [sink.feed for sink in (recorder, call.transcript) if sink is not None]
        held: list[bytes] = []  # events the upstream sent in one read go out in one write
        try:
            event = first
            while event is not None and not (guard and guard.stopped):
                if event.usage is not None:
                    usage = event.usage
                payload = guard.feed(event.data) if guard else event.data
                if payload is not None:
                    for feed in sinks:
                        feed(payload)
                    if include_usage or not event.usage_only:
                        held.append(b"data: " + payload + b"\n\n")
                if held and not event.more:
                    chunk = b"".join(held)
                    held.clear()
                    yield chunk
                event = await anext(events, None)
            for payload in guard.finish() if guard else ():
                for feed in sinks:
                    feed(payload)
                held.append(b"data: " + payload + b"\n\n")
            status = 200
            yield b"".join([*held, _DONE])
        except AtriumError as exc:
            # Headers are sent: report the failure in-band, as OpenAI does.
            status = status_of(exc)
            yield b"".join([*held, b"data: " + orjson.dumps(exc.to_openai()) + b"\n\n"])
        finally:
            await _aclose(events)
            self._record(call, status, usage)
        # Only a stream that ran to its end, uncut by a guardrail, is worth replaying.
        kept = recorder.answer() if recorder is not None else None
        if keep_as is not None and kept is not None and not (guard and guard.stopped):
            self._keep(keep_as, kept, call.semantic)

    def _reconcile(self, reservation: Reservation, actual_tokens: int) -> None:
        """Settle a reservation: at once in memory, else off the hot path (a Redis trip)."""
        if reservation.holds_anything and not self._limiter.reconcile_nowait(
            reservation, actual_tokens
        ):
            self._background_task(self._limiter.reconcile(reservation, actual_tokens))

    def _background_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def observe_budgets(self, budgets: Sequence[Budget]) -> None:
        """Report the spend of ``budgets`` (the spend gauge) before any request uses them."""
        if self._ledger is not None and budgets:
            await self._ledger.observe(budgets)

    async def drain(self) -> None:
        """Wait for pending reconciliations (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _record(self, call: _Call, status: int, usage: Usage) -> None:
        """Metrics, limiter reconciliation and the request.completed event."""
        if call.cached:
            usage = Usage()  # a cached answer took no model time: it costs no tokens
        seconds = time.perf_counter() - call.started
        if call.router is not None:
            _end_router(call.router, status, call.failures)
        if call.reservation is not None:
            self._reconcile(call.reservation, usage.total_tokens)
            self._metrics.in_flight_of(call.model).dec()
        self._metrics.observe(
            model=call.model,
            endpoint=call.endpoint.label,
            status=status,
            seconds=seconds,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            overhead_seconds=call.overhead() if status < 400 else None,
        )
        if call.first_token_at and usage.completion_tokens > 1:
            per_token = (time.perf_counter() - call.first_token_at) / (usage.completion_tokens - 1)
            self._metrics.observe_per_token(call.endpoint.label, call.model, per_token)
        if requests_log.isEnabledFor(logging.INFO):
            requests_log.info("%s", _log_line(call, status, usage, seconds))
        price = self._prices.get(call.model)
        cost = price.cost(usage.prompt_tokens, usage.completion_tokens) if price else 0.0
        if cost > 0 and call.budgets and self._ledger is not None:
            self._background_task(self._ledger.charge(call.budgets, cost))
        event = _completed_event(call, status, usage, seconds, cost)
        self._publisher.publish_nowait(event)
        if call.transcript is not None and self._transcripts is not None:
            self._transcripts.record_transcript(event, call.transcript)


def _completed_event(
    call: _Call, status: int, usage: Usage, seconds: float, cost: float
) -> RequestCompleted:
    key = call.principal.key if call.principal else None
    ttft = call.first_token_at
    return RequestCompleted(
        model=call.model,
        key_id=key.id if key else None,
        team_id=key.team.id if key and key.team else None,
        cost_usd=cost,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        latency_ms=seconds * 1000.0,
        status=status,
        stream=call.stream,
        endpoint=call.endpoint.label,
        routed_to=routed_to.get(),
        failed_targets=list(call.failures),
        ttft_ms=(ttft - call.started) * 1000.0 if ttft else None,
        # The serving replica audits a request whose text it keeps (text stays off the bus).
        audited=call.transcript is not None,
    )


async def _timed(call: _Call, work: Awaitable[T]) -> T:
    """Await the backend, adding its time to the call's model time.

    When traced, the backend runs under the ``router`` span (retries, fallbacks and
    each upstream attempt's ``backend`` span sit there); it ends with the request.
    """
    started = time.perf_counter()
    tracer = None if call.cached else recording_tracer()
    try:
        if tracer is None:
            return await work
        call.router = tracer.start_span("router", attributes={"gen_ai.request.model": call.model})
        with trace.use_span(call.router, record_exception=False, set_status_on_exception=False):
            return await work
    finally:
        call.model_seconds += time.perf_counter() - started


def _end_router(span: Span, status: int, failures: list[str]) -> None:
    """What routing settled on: the arm, the deployment, the targets that failed."""
    span.set_attribute("atrium.status", status)
    for name, value in (
        ("atrium.routed_to", routed_to.get()),
        ("atrium.served_by", served_by.get()),
    ):
        if value is not None:
            span.set_attribute(name, value)
    if failures:
        span.set_attribute("atrium.failed_targets", failures)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def _log_line(call: _Call, status: int, usage: Usage, seconds: float) -> str:
    """One JSON line per request: who, what, how long; never content or key material."""
    return orjson.dumps(
        {
            "event": "request",
            "endpoint": call.endpoint.label,
            "model": call.model,
            "served_by": served_by.get(),
            "key_id": call.principal.key_id if call.principal else None,
            "status": status,
            "stream": call.stream,
            "cache": cache_status.get(),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "latency_ms": round(seconds * 1000.0, 3),
            "overhead_ms": round(call.overhead() * 1000.0, 3),
        }
    ).decode()


def _estimate(request: BaseModel, default_completion: int) -> int:
    """Tokens a request may use, before the model has counted them (4 characters a token)."""
    chars: Callable[[], int] = getattr(request, "prompt_chars", lambda: 0)
    if isinstance(request, EmbeddingRequest):
        return math.ceil(chars() / 4)
    limit: int | None = getattr(request, "token_limit", None)
    n: int = getattr(request, "n", 1)
    return math.ceil(chars() / 4) + (limit or default_completion) * n


async def _aclose(events: AsyncIterator[StreamEvent]) -> None:
    close: Callable[[], Awaitable[None]] | None = getattr(events, "aclose", None)
    if close is not None:
        await close()


def _model_name(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else None
