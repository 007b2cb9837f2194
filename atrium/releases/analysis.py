"""What each arm of a route did: the canary analysis and A/B experiments read it.

Every gateway replica publishes ``request.completed`` with the route arm that answered
(``routed_to``), the arms that failed before it (``failed_targets``, retries and
fallbacks included) and the time to the first token. :class:`ArmObserver` follows those
events in a consumer group of its own, so it sees the traffic of every replica, and keeps
a bounded, time-stamped sample per arm.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from atrium.bus.base import EventBus, Subscription, replica_group
from atrium.bus.events import FeedbackGiven, RequestCompleted

#: Samples kept per arm (the oldest go first); enough for several analysis intervals.
MAX_SAMPLES = 20_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One attempt on an arm."""

    at: float
    ok: bool
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens: int = 0


@dataclass(slots=True)
class ArmWindow:
    """An arm's attempts over a time window."""

    arm: str
    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ttfts_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    feedback_up: int = 0
    feedback_down: int = 0

    @property
    def error_rate(self) -> float:
        """Failed attempts over all attempts (0 with no traffic)."""
        return self.errors / self.requests if self.requests else 0.0


class ArmObserver:
    """Per-arm samples from ``request.completed``, for any route arm (deployment) name."""

    def __init__(
        self, bus: EventBus, *, clock: Callable[[], float] = time.time, limit: int = MAX_SAMPLES
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._limit = limit
        self._arms: dict[str, deque[Sample]] = {}
        self._votes: dict[str, deque[tuple[float, bool]]] = {}
        self._subscriptions: list[Subscription] = []
        self._group = replica_group("arms")

    async def start(self) -> None:
        """Follow the gateway's request events and users' feedback.

        Not wrapped in ``once_per_event``: the group is this replica's alone and its
        samples live in memory and die with it, so an event comes again only when the
        acknowledgement itself failed; one sample too many in a sliding window is not
        worth a Redis round trip on every request."""
        self._subscriptions = [
            await self._bus.subscribe(RequestCompleted, self._group, "c", self.observe),
            await self._bus.subscribe(FeedbackGiven, self._group, "c", self.observe_feedback),
        ]

    async def close(self) -> None:
        """Stop following."""
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions = []

    async def observe_feedback(self, event: FeedbackGiven) -> None:
        """Count a thumbs up or down for the arm that answered."""
        votes = self._votes.get(event.target)
        if votes is None:
            votes = self._votes[event.target] = deque(maxlen=self._limit)
        votes.append((event.occurred_at.timestamp(), event.positive))

    async def observe(self, event: RequestCompleted) -> None:
        """Count one request: a failed attempt per failed target, then the arm that answered."""
        at = event.occurred_at.timestamp()
        for failed in event.failed_targets:
            self._add(failed, Sample(at, ok=False))
        arm = event.routed_to
        if arm is None or 400 <= event.status < 500:
            return  # not routed, or the caller's mistake: says nothing about the arm
        if event.status >= 500:
            if not event.failed_targets or event.failed_targets[-1] != arm:
                self._add(arm, Sample(at, ok=False))  # not counted by the route already
            return
        self._add(
            arm,
            Sample(
                at,
                ok=True,
                latency_ms=event.latency_ms,
                ttft_ms=event.ttft_ms,
                tokens=event.completion_tokens,
            ),
        )

    def _add(self, arm: str, sample: Sample) -> None:
        samples = self._arms.get(arm)
        if samples is None:
            samples = self._arms[arm] = deque(maxlen=self._limit)
        samples.append(sample)

    def window(
        self, arm: str, since: float, until: float | None = None, *, timed_from: float = 0.0
    ) -> ArmWindow:
        """The arm's attempts that ended between ``since`` and ``until`` (epoch seconds).

        Latencies are kept only of requests that started at ``timed_from`` or later (a
        warm-up: the slow first requests of a cold replica end late, but started early).
        """
        end = self._clock() if until is None else until
        out = ArmWindow(arm)
        for sample in self._arms.get(arm, ()):
            if not since <= sample.at <= end:
                continue
            out.requests += 1
            out.tokens += sample.tokens
            if not sample.ok:
                out.errors += 1
                continue
            if sample.latency_ms is None or sample.at - sample.latency_ms / 1000 < timed_from:
                continue
            out.latencies_ms.append(sample.latency_ms)
            if sample.ttft_ms is not None:
                out.ttfts_ms.append(sample.ttft_ms)
        for at, positive in self._votes.get(arm, ()):
            if since <= at <= end:
                out.feedback_up += positive
                out.feedback_down += not positive
        return out

    def now(self) -> float:
        """The observer's clock (epoch seconds)."""
        return self._clock()
