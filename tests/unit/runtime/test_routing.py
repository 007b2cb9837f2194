"""Routes and replica sets over in-memory backends that implement the ModelBackend protocol."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import orjson
import pytest

from atrium.core.errors import (
    AtriumError,
    ContextLengthError,
    InvalidRequestError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from atrium.core.settings import BreakerSettings, RouteSpec, RouteTarget
from atrium.runtime.base import BackendBase, Capability, Health, StreamEvent
from atrium.runtime.routing import (
    NoReplicaError,
    Replica,
    ReplicaSet,
    Route,
    Target,
    request_headers,
    served_by,
)
from atrium.runtime.schema import JSON, ChatCompletionRequest


class Scripted(BackendBase):
    """Answers with its name, or raises the errors it is given, in order."""

    capabilities = frozenset({Capability.CHAT})

    def __init__(self, name: str, *failures: AtriumError) -> None:
        self.name = name
        self.failures = list(failures)
        self.calls = 0
        self.ready = True

    def _next(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        self._next()
        return {"served": self.name}

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        self._next()
        yield StreamEvent(orjson.dumps({"served": self.name}))
        yield StreamEvent(b'{"part": 2}')

    async def health(self) -> Health:
        return Health(ready=self.ready)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Observed:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def retried(self, route: str, target: str) -> None:
        self.events.append(("retry", route, target))

    def fell_back(self, route: str, failed: str, to: str) -> None:
        self.events.append(("fallback", route, failed, to))

    def cooled_down(self, model: str, replica: str) -> None:
        self.events.append(("cooldown", model, replica))


def _chat(user: str | None = None) -> ChatCompletionRequest:
    body: dict[str, object] = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
    if user is not None:
        body["user"] = user
    return ChatCompletionRequest.model_validate(body)


def _route(
    arms: list[tuple[Scripted, float]],
    fallbacks: list[Scripted] = (),  # type: ignore[assignment]
    **spec: object,
) -> tuple[Route, Sleeps, Observed]:
    settings = RouteSpec(
        targets=[RouteTarget(model=b.name, weight=w) for b, w in arms],
        fallbacks=[b.name for b in fallbacks],
        **spec,  # type: ignore[arg-type]
    )
    sleeps, observed = Sleeps(), Observed()
    route = Route(
        "r",
        settings,
        [Target(b.name, b, w) for b, w in arms],
        [Target(b.name, b) for b in fallbacks],
        observer=observed,
        sleep=sleeps,
    )
    return route, sleeps, observed


# -- the split -------------------------------------------------------------------------


async def test_an_80_20_split_over_1000_requests_lands_within_bounds() -> None:
    a, b = Scripted("a"), Scripted("b")
    route, _, _ = _route([(a, 80), (b, 20)], sticky="none")
    served = Counter([(await route.chat(_chat()))["served"] for _ in range(1000)])
    # Binomial(1000, 0.8): sd 12.6; five of them either side.
    assert 737 <= served["a"] <= 863
    assert served["a"] + served["b"] == 1000


async def test_sticky_users_stay_on_one_arm_and_users_split_by_weight() -> None:
    a, b = Scripted("a"), Scripted("b")
    route, _, _ = _route([(a, 80), (b, 20)])
    first = {f"user-{i}": (await route.chat(_chat(f"user-{i}")))["served"] for i in range(1000)}
    again = {f"user-{i}": (await route.chat(_chat(f"user-{i}")))["served"] for i in range(1000)}
    assert first == again
    assert 737 <= Counter(first.values())["a"] <= 863


async def test_header_stickiness_reads_the_request_headers() -> None:
    a, b = Scripted("a"), Scripted("b")
    route, _, _ = _route([(a, 1), (b, 1)], sticky="header", sticky_header="X-Session")
    token = request_headers.set({"x-session": "s-1"})
    try:
        arms = {(await route.chat(_chat()))["served"] for _ in range(50)}
    finally:
        request_headers.reset(token)
    assert len(arms) == 1


# -- retries and fallbacks ----------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamError("connection refused"),
        UpstreamTimeoutError("slow"),
        UpstreamStatusError(500, {}, {}),
        UpstreamStatusError(429, {}, {"retry-after": "0.2"}),
    ],
    ids=["connection", "timeout", "5xx", "429"],
)
async def test_retryable_failures_are_retried_then_fall_back(failure: AtriumError) -> None:
    primary, spare = Scripted("a", failure, failure), Scripted("b")
    route, sleeps, observed = _route([(primary, 1)], [spare], retries=1)
    assert await route.chat(_chat()) == {"served": "b"}
    assert primary.calls == 2
    assert len(sleeps.delays) == 1
    assert observed.events == [("retry", "r", "a"), ("fallback", "r", "a", "b")]
    assert served_by.get() == "b"


async def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    primary = Scripted("a", *(UpstreamError("x") for _ in range(3)))
    route, sleeps, _ = _route([(primary, 1)], retries=3, backoff_ms=100)
    assert await route.chat(_chat()) == {"served": "a"}
    first, second, third = sleeps.delays
    assert 0.05 <= first <= 0.15
    assert 0.1 <= second <= 0.3
    assert 0.2 <= third <= 0.6
    waiting = Scripted("a", UpstreamStatusError(429, {}, {"retry-after": "2"}))
    route, sleeps, _ = _route([(waiting, 1)], retries=1, backoff_ms=1)
    await route.chat(_chat())
    assert sleeps.delays == [2.0]


async def test_a_retry_after_beyond_the_cap_goes_straight_to_the_fallback() -> None:
    primary = Scripted("a", UpstreamStatusError(429, {}, {"retry-after": "120"}))
    route, sleeps, _ = _route([(primary, 1)], [Scripted("b")], retries=3, max_backoff_ms=5000)
    assert await route.chat(_chat()) == {"served": "b"}
    assert primary.calls == 1
    assert sleeps.delays == []


async def test_a_context_overflow_skips_retries_and_falls_back() -> None:
    overflow = UpstreamStatusError(
        400, {"error": {"message": "This model's maximum context length is 4096 tokens"}}, {}
    )
    small = Scripted("small", overflow)
    route, sleeps, _ = _route([(small, 1)], [Scripted("large")], retries=2)
    assert await route.chat(_chat()) == {"served": "large"}
    assert small.calls == 1
    assert sleeps.delays == []
    local = Scripted("local", ContextLengthError("too long"))
    route, _, _ = _route([(local, 1)], [Scripted("large")])
    assert await route.chat(_chat()) == {"served": "large"}


async def test_bad_requests_are_neither_retried_nor_passed_on() -> None:
    primary = Scripted("a", UpstreamStatusError(400, {"error": {"message": "bad"}}, {}))
    spare = Scripted("b")
    route, _, _ = _route([(primary, 1)], [spare], retries=2)
    with pytest.raises(UpstreamStatusError, match="bad"):
        await route.chat(_chat())
    assert (primary.calls, spare.calls) == (1, 0)
    refused = Scripted("a", InvalidRequestError("nope"))
    route, _, _ = _route([(refused, 1)], [spare])
    with pytest.raises(InvalidRequestError):
        await route.chat(_chat())


async def test_when_every_target_fails_the_last_error_is_raised() -> None:
    route, _, _ = _route(
        [(Scripted("a", UpstreamError("a down")), 1)],
        [Scripted("b", UpstreamError("b down"))],
        retries=0,
    )
    with pytest.raises(UpstreamError, match="b down"):
        await route.chat(_chat())


async def test_streams_fall_back_before_their_first_event_only() -> None:
    route, _, _ = _route([(Scripted("a", UpstreamError("down")), 1)], [Scripted("b")], retries=0)
    events = [orjson.loads(e.data) async for e in route.chat_stream(_chat())]
    assert events == [{"served": "b"}, {"part": 2}]


# -- replica sets ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _replicas(*backends: Scripted, **options: object) -> tuple[ReplicaSet, Clock, Observed]:
    clock, observed = Clock(), Observed()
    replicas = [Replica(b.name, b) for b in backends]
    return ReplicaSet("m", replicas, clock=clock, observer=observed, **options), clock, observed  # type: ignore[arg-type]


async def test_least_outstanding_picks_the_idle_replica() -> None:
    pool, _, _ = _replicas(Scripted("a"), Scripted("b"))
    pool.replicas[0].in_flight = 3
    assert {pool.pick().name for _ in range(20)} == {"b"}


async def test_weighted_round_robin_gives_exact_shares() -> None:
    a, b = Scripted("a"), Scripted("b")
    pool = ReplicaSet("m", [Replica("a", a, 3), Replica("b", b, 1)], balancing="round_robin")
    picks = [pool.pick().name for _ in range(8)]
    assert Counter(picks) == {"a": 6, "b": 2}
    assert picks[:4].count("b") == 1  # interleaved, not in runs


async def test_ewma_prefers_the_faster_replica() -> None:
    pool, _, _ = _replicas(Scripted("a"), Scripted("b"), balancing="ewma")
    pool.replicas[0].ewma_ms, pool.replicas[1].ewma_ms = 50.0, 5.0
    assert {pool.pick().name for _ in range(10)} == {"b"}


async def test_breaker_opens_after_consecutive_failures_then_probes_once() -> None:
    sick = Scripted("a", *(UpstreamError("x") for _ in range(4)))
    pool, clock, observed = _replicas(
        sick, breaker=BreakerSettings(failures=3, cooldown_seconds=30)
    )
    for _ in range(3):
        with pytest.raises(UpstreamError):
            await pool.chat(_chat())
    assert observed.events == [("cooldown", "m", "a")]
    with pytest.raises(NoReplicaError) as cooling:
        await pool.chat(_chat())
    assert cooling.value.status == 503
    clock.now += 30
    probe = pool.pick()  # half-open: one probe, nobody else meanwhile
    with pytest.raises(NoReplicaError):
        pool.pick()
    probe.probing = False
    with pytest.raises(UpstreamError):
        await pool.chat(_chat())  # the probe fails: open again at once
    assert len(observed.events) == 2
    clock.now += 30
    assert await pool.chat(_chat()) == {"served": "a"}  # the probe succeeds: closed
    assert pool.replicas[0].open_until == 0.0
    assert await pool.chat(_chat()) == {"served": "a"}


async def test_a_bad_request_does_not_count_against_the_replica() -> None:
    fussy = Scripted("a", *(UpstreamStatusError(400, {}, {}) for _ in range(5)))
    pool, _, observed = _replicas(fussy, breaker=BreakerSettings(failures=2))
    for _ in range(5):
        with pytest.raises(UpstreamStatusError):
            await pool.chat(_chat())
    assert observed.events == []


async def test_health_checks_take_replicas_out_and_back() -> None:
    a, b = Scripted("a"), Scripted("b")
    pool, _, _ = _replicas(a, b)
    a.ready = False
    await pool.check_health()
    assert {pool.pick().name for _ in range(10)} == {"b"}
    assert (await pool.health()).detail == "1/2 replicas available"
    b.ready = False
    await pool.check_health()
    assert not (await pool.health()).ready
    a.ready = True
    await pool.check_health()
    assert await pool.chat(_chat()) == {"served": "a"}
    assert served_by.get() == "a"


async def test_a_replica_stream_tracks_load_until_it_ends() -> None:
    pool, _, _ = _replicas(Scripted("a"))
    stream = pool.chat_stream(_chat())
    await anext(stream)
    assert pool.replicas[0].in_flight == 1
    assert [orjson.loads(e.data) async for e in stream] == [{"part": 2}]
    assert pool.replicas[0].in_flight == 0
