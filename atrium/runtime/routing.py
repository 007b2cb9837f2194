"""Routing as wrappers around any ``ModelBackend``.

- :class:`ReplicaSet` balances one model over several replicas (least outstanding
  requests, latency EWMA or weighted round robin), cools a failing replica down
  with a circuit breaker (then lets one probe through), and health-checks them.
- :class:`Route` serves a public name with a weighted split over models (sticky
  by caller), retries with exponential backoff and jitter that honour
  ``Retry-After``, and a fallback chain.

Both are backends themselves, so the gateway serves a route like any model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from opentelemetry import trace

from atrium.core.errors import (
    AtriumError,
    ContextLengthError,
    OverloadedError,
    UpstreamError,
    UpstreamStatusError,
)
from atrium.core.settings import BreakerSettings, RouteSpec
from atrium.runtime._tracing import attempt, attempt_stream
from atrium.runtime.base import BackendBase, Health, ModelBackend, StreamEvent
from atrium.runtime.schema import JSON, ChatCompletionRequest, CompletionRequest, EmbeddingRequest

log = logging.getLogger("atrium.routing")

T = TypeVar("T")
Request = ChatCompletionRequest | CompletionRequest | EmbeddingRequest

#: Which deployment served the current request (set by the wrappers, read by the gateway).
served_by: ContextVar[str | None] = ContextVar("atrium_served_by", default=None)
#: Which model of a route took the current request (a route's arm, not a replica).
routed_to: ContextVar[str | None] = ContextVar("atrium_routed_to", default=None)
#: Route targets that failed during the current request (one entry per failed attempt);
#: the gateway sets a fresh list per request, routes append to it.
failed_targets: ContextVar[list[str] | None] = ContextVar("atrium_failed_targets", default=None)
#: The current request's headers, for header-sticky routes (set by the gateway).
request_headers: ContextVar[Mapping[str, str] | None] = ContextVar(
    "atrium_request_headers", default=None
)

Balancing = Literal["least_outstanding", "ewma", "round_robin"]
_EWMA_DECAY = 0.3


class RoutingObserver(Protocol):
    """Counts what routing did (implemented by the gateway's metrics)."""

    def retried(self, route: str, target: str) -> None:
        """A target is tried again."""

    def fell_back(self, route: str, failed: str, to: str) -> None:
        """The next target of a fallback chain is tried."""

    def cooled_down(self, model: str, replica: str) -> None:
        """A replica's breaker opened."""


class NoReplicaError(UpstreamError):
    """Every replica of a model is cooling down or unhealthy."""

    status = 503
    default_code = "no_healthy_replica"


def is_retryable(error: AtriumError) -> bool:
    """Worth trying again or elsewhere: transport failures, overload, 429 and 5xx."""
    if isinstance(error, UpstreamError | OverloadedError):
        return True
    return isinstance(error, UpstreamStatusError) and (
        error.upstream_status == 429 or error.upstream_status >= 500
    )


def overflows_context(error: AtriumError) -> bool:
    """The prompt does not fit this model: another model may take it; retrying cannot."""
    if isinstance(error, ContextLengthError):
        return True
    if not isinstance(error, UpstreamStatusError) or error.upstream_status != 400:
        return False
    text = f"{error.code} {error.message}".lower()
    return "context_length" in text or "context length" in text or "maximum context" in text


# -- replicas ---------------------------------------------------------------------------


@dataclass
class Replica:
    """One replica with its load, latency and breaker state."""

    name: str
    backend: ModelBackend
    weight: float = 1.0
    in_flight: int = 0
    ewma_ms: float = 0.0
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    healthy: bool = True
    current_weight: float = field(default=0.0, repr=False)

    def available(self, now: float) -> bool:
        """Closed breaker, or an open one whose cooldown ended and no probe is out."""
        if not self.healthy:
            return False
        if self.open_until == 0.0:
            return True
        return now >= self.open_until and not self.probing


class ReplicaSet(BackendBase):
    """One model served by several replicas."""

    def __init__(
        self,
        name: str,
        replicas: Sequence[Replica],
        *,
        balancing: Balancing = "least_outstanding",
        breaker: BreakerSettings | None = None,
        health_check_seconds: float = 0.0,
        observer: RoutingObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.replicas = list(replicas)
        first = self.replicas[0].backend
        self.capabilities = frozenset.intersection(*(r.backend.capabilities for r in replicas))
        self.completion_estimate = first.completion_estimate
        self._balancing = balancing
        self._breaker = breaker or BreakerSettings()
        self._health_every = health_check_seconds
        self._observer = observer
        self._clock = clock
        self._checker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the replicas and the health checks."""
        await asyncio.gather(*(r.backend.start() for r in self.replicas))
        if self._health_every > 0:
            self._checker = asyncio.create_task(self._check_forever(), name=f"health:{self.name}")

    async def close(self) -> None:
        """Stop the health checks and the replicas."""
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        await asyncio.gather(*(r.backend.close() for r in self.replicas))

    async def health(self) -> Health:
        """Ready while any replica can take traffic."""
        now = self._clock()
        up = sum(1 for r in self.replicas if r.available(now))
        return Health(ready=up > 0, detail=f"{up}/{len(self.replicas)} replicas available")

    async def check_health(self) -> None:
        """Probe every replica once; unhealthy ones take no traffic until they recover."""
        results = await asyncio.gather(*(r.backend.health() for r in self.replicas))
        for replica, result in zip(self.replicas, results, strict=True):
            if replica.healthy != result.ready:
                log.warning("replica %s is now %s", replica.name, "up" if result.ready else "down")
            replica.healthy = result.ready

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self._health_every)
            await self.check_health()

    # -- picking ---------------------------------------------------------------------

    def pick(self) -> Replica:
        """The replica for the next request, by the balancing policy."""
        now = self._clock()
        candidates = [r for r in self.replicas if r.available(now)]
        if not candidates:
            msg = f"every replica of {self.name!r} is cooling down or unhealthy"
            raise NoReplicaError(msg, headers={"retry-after": "1"})
        chosen = self._choose(candidates)
        if chosen.open_until:
            chosen.probing = True  # half-open: this request is the probe
        return chosen

    def _choose(self, candidates: list[Replica]) -> Replica:
        if self._balancing == "round_robin":
            return _smooth_weighted(candidates)
        if self._balancing == "ewma":
            return min(candidates, key=lambda r: (r.ewma_ms * (r.in_flight + 1), r.in_flight))
        fewest = min(r.in_flight for r in candidates)
        return random.choice([r for r in candidates if r.in_flight == fewest])  # noqa: S311

    def _succeeded(self, replica: Replica, started: float) -> None:
        elapsed_ms = (self._clock() - started) * 1000.0
        replica.ewma_ms = (
            elapsed_ms
            if replica.ewma_ms == 0.0
            else (1 - _EWMA_DECAY) * replica.ewma_ms + _EWMA_DECAY * elapsed_ms
        )
        replica.failures, replica.open_until, replica.probing = 0, 0.0, False

    def _failed(self, replica: Replica, error: AtriumError) -> None:
        if not _counts_against_replica(error):
            replica.probing = False
            return
        replica.failures += 1
        if replica.probing or replica.failures >= self._breaker.failures:
            replica.open_until = self._clock() + self._breaker.cooldown_seconds
            replica.probing = False
            log.warning(
                "replica %s cooled down for %ss", replica.name, self._breaker.cooldown_seconds
            )
            if self._observer is not None:
                self._observer.cooled_down(self.name, replica.name)

    # -- calls -----------------------------------------------------------------------

    async def _call(self, call: Callable[[ModelBackend], Awaitable[T]]) -> T:
        replica = self.pick()
        served_by.set(replica.name)
        replica.in_flight += 1
        started = self._clock()
        try:
            result = await attempt(self.name, replica.name, call(replica.backend))
        except AtriumError as exc:
            self._failed(replica, exc)
            raise
        finally:
            replica.in_flight -= 1
        self._succeeded(replica, started)
        return result

    async def _stream(
        self, open_stream: Callable[[ModelBackend], AsyncIterator[StreamEvent]]
    ) -> AsyncIterator[StreamEvent]:
        replica = self.pick()
        served_by.set(replica.name)
        replica.in_flight += 1
        started = self._clock()
        events = attempt_stream(self.name, replica.name, open_stream(replica.backend))
        try:
            async for event in events:
                if started:  # latency to the first event is what balancing cares about
                    self._succeeded(replica, started)
                    started = 0.0
                yield event
        except AtriumError as exc:
            self._failed(replica, exc)
            raise
        finally:
            replica.in_flight -= 1
            await events.aclose()  # type: ignore[attr-defined]

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """A chat completion from the picked replica."""
        return await self._call(lambda b: b.chat(request))

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """A streamed chat completion from the picked replica."""
        return self._stream(lambda b: b.chat_stream(request))

    async def complete(self, request: CompletionRequest) -> JSON:
        """A text completion from the picked replica."""
        return await self._call(lambda b: b.complete(request))

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """A streamed text completion from the picked replica."""
        return self._stream(lambda b: b.complete_stream(request))

    async def embed(self, request: EmbeddingRequest) -> JSON:
        """Embeddings from the picked replica."""
        return await self._call(lambda b: b.embed(request))

    async def count_tokens(self, text: str) -> int:
        """Counted by the first replica's tokenizer."""
        return await self.replicas[0].backend.count_tokens(text)


class ScaleFromZero(BackendBase):
    """A replica set that may be scaled to zero: a request wakes it and waits for a replica.

    ``wake`` starts a replica (the deployer's scale-up, ready on return); concurrent
    requests share one wake.
    """

    def __init__(self, replicas: ReplicaSet, wake: Callable[[], Awaitable[None]]) -> None:
        self.name = replicas.name
        self.replicas = replicas
        self.capabilities = replicas.capabilities
        self.completion_estimate = replicas.completion_estimate
        self._wake = wake
        self._waking: asyncio.Future[None] | None = None

    async def _ready(self) -> None:
        if any(r.healthy for r in self.replicas.replicas):
            return
        if self._waking is None or self._waking.done():
            self._waking = asyncio.ensure_future(self._wake())
        await asyncio.shield(self._waking)

    async def health(self) -> Health:
        """Ready: a replica answers, or one starts for the next request."""
        if not self.replicas.replicas:
            return Health(ready=True, detail="scaled to zero; a request starts a replica")
        return await self.replicas.health()

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """A chat completion, after waking a replica if there is none."""
        await self._ready()
        return await self.replicas.chat(request)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """A streamed chat completion, after waking a replica if there is none."""
        await self._ready()
        async for event in self.replicas.chat_stream(request):
            yield event

    async def complete(self, request: CompletionRequest) -> JSON:
        """A text completion, after waking a replica if there is none."""
        await self._ready()
        return await self.replicas.complete(request)

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """A streamed text completion, after waking a replica if there is none."""
        await self._ready()
        async for event in self.replicas.complete_stream(request):
            yield event

    async def embed(self, request: EmbeddingRequest) -> JSON:
        """Embeddings, after waking a replica if there is none."""
        await self._ready()
        return await self.replicas.embed(request)

    async def count_tokens(self, text: str) -> int:
        """Counted by a replica's tokenizer, or roughly while scaled to zero."""
        if not self.replicas.replicas:
            return max(1, len(text) // 4)
        return await self.replicas.count_tokens(text)


def _counts_against_replica(error: AtriumError) -> bool:
    """Transport failures and 5xx say the replica is sick; a 4xx says the request was bad."""
    if isinstance(error, UpstreamError):
        return True
    return isinstance(error, UpstreamStatusError) and error.upstream_status >= 500


def _smooth_weighted(candidates: list[Replica]) -> Replica:
    """nginx's smooth weighted round robin: even interleaving, exact shares."""
    total = sum(r.weight for r in candidates)
    for replica in candidates:
        replica.current_weight += replica.weight
    chosen = max(candidates, key=lambda r: r.current_weight)
    chosen.current_weight -= total
    return chosen


# -- routes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A model a route can send requests to."""

    name: str
    backend: ModelBackend
    weight: float = 1.0


class Route(BackendBase):
    """A weighted split with stickiness, retries and a fallback chain."""

    def __init__(
        self,
        name: str,
        spec: RouteSpec,
        targets: Sequence[Target],
        fallbacks: Sequence[Target],
        *,
        observer: RoutingObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._spec = spec
        self._targets = list(targets)
        self._fallbacks = list(fallbacks)
        every = [t.backend for t in (*targets, *fallbacks)]
        self.capabilities = frozenset.intersection(*(b.capabilities for b in every))
        self.completion_estimate = max(b.completion_estimate for b in every)
        self._observer = observer
        self._sleep = sleep

    async def health(self) -> Health:
        """Ready while any arm is."""
        results = await asyncio.gather(*(t.backend.health() for t in self._targets))
        ready = [t.name for t, h in zip(self._targets, results, strict=True) if h.ready]
        return Health(ready=bool(ready), detail=f"ready arms: {ready}")

    def choose(self, request: Request) -> Target:
        """The split's arm for this request: by the caller's hash when sticky."""
        key = self._sticky_key(request)
        point = _unit_hash(f"{self.name}\x00{key}") if key else random.random()  # noqa: S311
        return self._targets[_pick(point, [t.weight for t in self._targets])]

    def _sticky_key(self, request: Request) -> str | None:
        if self._spec.sticky == "user":
            return request.user
        if self._spec.sticky == "header":
            headers = request_headers.get() or {}
            return headers.get(self._spec.sticky_header.lower())
        return None

    def plan(self, request: Request) -> list[Target]:
        """The chosen arm, then the fallbacks (without repeating a model)."""
        chosen = self.choose(request)
        return [chosen, *(f for f in self._fallbacks if f.name != chosen.name)]

    async def _attempts(self, request: Request, call: Callable[[Target], Awaitable[T]]) -> T:
        last: AtriumError | None = None
        previous = ""
        span = trace.get_current_span()  # the gateway's router span when traced
        traced = span.is_recording()
        for target in self.plan(request):
            if last is not None and self._observer is not None:
                self._observer.fell_back(self.name, previous, target.name)
            if traced:
                _route_event(span, self.name, target.name, previous, last)
            served_by.set(target.name)
            routed_to.set(target.name)
            try:
                return await self._with_retries(target, call)
            except AtriumError as exc:
                if not (is_retryable(exc) or overflows_context(exc)):
                    raise
                last, previous = exc, target.name
        assert last is not None
        raise last

    async def _with_retries(self, target: Target, call: Callable[[Target], Awaitable[T]]) -> T:
        for tries in range(self._spec.retries + 1):
            try:
                return await call(target)
            except AtriumError as exc:
                if is_retryable(exc) or overflows_context(exc):
                    _note_failure(target.name)  # the target's fault, not the caller's
                delay = self._delay(tries, exc)
                if tries == self._spec.retries or delay is None:
                    raise
            if self._observer is not None:
                self._observer.retried(self.name, target.name)
            _retry_event(target.name, tries + 1, delay)
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, error: AtriumError) -> float | None:
        """Seconds before the next try of the same target, or None to move on."""
        if not is_retryable(error) or overflows_context(error):
            return None
        backoff = self._spec.backoff_ms / 1000 * (2.0**attempt) * random.uniform(0.5, 1.5)  # noqa: S311
        retry_after = _retry_after(error)
        limit = self._spec.max_backoff_ms / 1000
        if retry_after is not None and retry_after > limit:
            return None  # waiting that long is worse than the next target
        return min(limit, max(backoff, retry_after or 0.0))

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """A chat completion through the route."""
        return await self._attempts(
            request, lambda t: traced_call(t.name, t.backend, t.backend.chat(request))
        )

    async def complete(self, request: CompletionRequest) -> JSON:
        """A text completion through the route."""
        return await self._attempts(
            request, lambda t: traced_call(t.name, t.backend, t.backend.complete(request))
        )

    async def embed(self, request: EmbeddingRequest) -> JSON:
        """Embeddings through the route."""
        return await self._attempts(
            request, lambda t: traced_call(t.name, t.backend, t.backend.embed(request))
        )

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """A streamed chat completion: retries and fallbacks until the first event."""
        started = await self._attempts(
            request,
            lambda t: _first(traced_stream(t.name, t.backend, t.backend.chat_stream(request))),
        )
        async for event in _resume(*started):
            yield event

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """A streamed text completion: retries and fallbacks until the first event."""
        started = await self._attempts(
            request,
            lambda t: _first(traced_stream(t.name, t.backend, t.backend.complete_stream(request))),
        )
        async for event in _resume(*started):
            yield event

    async def count_tokens(self, text: str) -> int:
        """Counted by the first arm's tokenizer."""
        return await self._targets[0].backend.count_tokens(text)


async def _first(
    events: AsyncIterator[StreamEvent],
) -> tuple[StreamEvent | None, AsyncIterator[StreamEvent]]:
    """Open a stream up to its first event, so failures before it can be retried."""
    try:
        return await anext(events, None), events
    except AtriumError:
        await events.aclose()  # type: ignore[attr-defined]
        raise


async def _resume(
    first: StreamEvent | None, events: AsyncIterator[StreamEvent]
) -> AsyncIterator[StreamEvent]:
    try:
        if first is None:
            return
        yield first
        async for event in events:
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def sticky_arm(route: str, key: str, arms: Sequence[tuple[str, float]]) -> str:
    """The arm a sticky route sends ``key`` (a user or header value) to: as :class:`Route` does."""
    point = _unit_hash(f"{route}\x00{key}")
    return arms[_pick(point, [weight for _, weight in arms])][0]


def _pick(point: float, weights: Sequence[float]) -> int:
    total = sum(weights)
    threshold = 0.0
    for index, weight in enumerate(weights):
        threshold += weight / total
        if point < threshold:
            return index
    return len(weights) - 1


def _route_event(
    span: trace.Span, route: str, target: str, previous: str, error: AtriumError | None
) -> None:
    """The route's choice (first target) or a fallback to the next, as a span event."""
    if error is None:
        span.add_event("route.target", {"atrium.route": route, "atrium.target": target})
        return
    attributes = {"atrium.route": route, "atrium.target": target, "atrium.failed": previous,
                  "error.type": error.code or type(error).__name__}  # fmt: skip
    span.add_event("fallback", attributes)


def _retry_event(target: str, tries: int, delay: float) -> None:
    """A retry of ``target`` on the router span (when traced)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            "retry", {"atrium.target": target, "atrium.attempt": tries, "atrium.delay_s": delay}
        )


def traced_call(name: str, backend: ModelBackend, work: Awaitable[T]) -> Awaitable[T]:
    """``work`` on ``backend`` inside a backend span, unless the backend opens its own.

    Routes and replica sets open one per upstream attempt; a plain model served
    directly gets it from here (the gateway's call).
    """
    if isinstance(backend, ReplicaSet | ScaleFromZero | Route):
        return work
    return attempt(name, name, work)


def traced_stream(
    name: str, backend: ModelBackend, events: AsyncIterator[StreamEvent]
) -> AsyncIterator[StreamEvent]:
    """:func:`traced_call` for a stream."""
    if isinstance(backend, ReplicaSet | ScaleFromZero | Route):
        return events
    return attempt_stream(name, name, events)


def _note_failure(target: str) -> None:
    failures = failed_targets.get()
    if failures is not None:
        failures.append(target)


def _unit_hash(text: str) -> float:
    """A stable point in [0, 1) for a caller (the same on every replica and restart)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _retry_after(error: AtriumError) -> float | None:
    value = error.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
