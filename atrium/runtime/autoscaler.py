"""Scales local deployments on outstanding requests per replica.

Every ``interval`` the autoscaler samples each autoscaled deployment's requests in flight
(the gateway's own count on each replica). It scales up to ``ceil(mean in flight over the
last few samples / target)`` once the up cooldown has passed, and down to
``ceil(max in flight over scale_down_delay_seconds / target)`` only after that whole
delay without a scaling event: quick to add capacity, slow to take it away. With
``replicas.min`` at 0 an idle deployment goes to zero replicas; the deployer wakes it for
the next request, which waits for the replica instead of failing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from atrium.core.errors import AtriumError
from atrium.runtime.deployers.base import Deployment, ReplicaState

log = logging.getLogger("atrium.autoscaler")

#: Samples the scale-up decision averages over.
UP_SAMPLES = 3


class Scaler(Protocol):
    """What the autoscaler drives: a deployment service (or a deployer)."""

    async def list(self) -> builtins.list[Deployment]:
        """Every deployment."""

    async def scale(self, name: str, replicas: int, reason: str = ...) -> Deployment:
        """Change a deployment's replica count."""


@dataclass
class _Track:
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=10_000))
    last_scaled: float = 0.0
    last_count: int = -1


@dataclass(frozen=True, slots=True)
class Decision:
    """What one look at a deployment decided."""

    deployment: str
    current: int
    desired: int
    in_flight: int
    reason: str


class Autoscaler:
    """Keeps each autoscaled deployment's replicas near ``in flight / target``."""

    def __init__(
        self,
        scaler: Scaler,
        *,
        interval_seconds: float = 2.0,
        up_cooldown_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._scaler = scaler
        self._interval = interval_seconds
        self._up_cooldown = up_cooldown_seconds
        self._clock = clock
        self._tracks: dict[str, _Track] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Look at the deployments every interval, in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="autoscaler")

    async def close(self) -> None:
        """Stop looking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except AtriumError as exc:
                log.warning("autoscaler: %s", exc.message)
            await asyncio.sleep(self._interval)

    async def tick(self) -> list[Decision]:
        """Sample every deployment once and scale those whose replicas are off target."""
        decisions = []
        deployments = await self._scaler.list()
        for name in set(self._tracks) - {d.name for d in deployments}:
            del self._tracks[name]
        for deployment in deployments:
            decision = self.decide(deployment)
            if decision is not None and decision.desired != decision.current:
                await self._apply(decision)
                decisions.append(decision)
        return decisions

    def decide(self, deployment: Deployment) -> Decision | None:
        """Record a sample and say what the deployment should run (None: not autoscaled)."""
        spec = deployment.spec
        bounds = spec.replicas
        if bounds.min == bounds.max or spec.autoscaling.metric != "in_flight":
            return None
        now = self._clock()
        track = self._tracks.setdefault(deployment.name, _Track(last_scaled=now))
        live = [r for r in deployment.replicas if r.state != ReplicaState.DRAINING]
        in_flight = sum(r.in_flight for r in live)
        track.samples.append((now, in_flight))
        current = deployment.desired
        starting = any(r.state == ReplicaState.STARTING for r in live)
        if current != track.last_count or starting:
            # Scaled by someone else (an operator, a wake-up), or replicas still loading:
            # the quiet period before a scale-down starts once they serve.
            track.last_scaled, track.last_count = now, current
        target = spec.autoscaling.target
        ceiling = min(bounds.max, max(deployment.allocation.max_replicas, bounds.min))
        recent = [n for _, n in list(track.samples)[-UP_SAMPLES:]]
        up = min(ceiling, math.ceil(sum(recent) / len(recent) / target))
        if up > current and now - track.last_scaled >= self._up_cooldown:
            mean = sum(recent) / len(recent)
            return Decision(deployment.name, current, up, in_flight, f"{mean:.1f} in flight")
        delay = spec.autoscaling.scale_down_delay_seconds
        if now - track.last_scaled < delay:
            return Decision(deployment.name, current, current, in_flight, "cooling down")
        window = [n for at, n in track.samples if at >= now - delay]
        down = max(bounds.min, math.ceil(max(window, default=0) / target))
        if down < current:
            reason = f"at most {max(window, default=0)} in flight for {delay:g}s"
            return Decision(deployment.name, current, down, in_flight, reason)
        return Decision(deployment.name, current, current, in_flight, "on target")

    async def _apply(self, decision: Decision) -> None:
        log.info(
            "autoscaler: %s %d -> %d replicas (%s)",
            decision.deployment, decision.current, decision.desired, decision.reason,
        )  # fmt: skip
        track = self._tracks[decision.deployment]
        track.last_scaled = self._clock()
        await self._scaler.scale(
            decision.deployment, decision.desired, reason=f"autoscaler: {decision.reason}"
        )
        track.last_scaled, track.last_count = self._clock(), decision.desired
