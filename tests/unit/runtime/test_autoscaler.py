"""The autoscaler's decisions on outstanding requests, with a hand-driven clock."""

from __future__ import annotations

import builtins
from typing import Any

from atrium.runtime.autoscaler import Autoscaler
from atrium.runtime.deployers.base import Deployment, ReplicaState, ReplicaStatus
from atrium.runtime.deployments import Allocation, DeploymentSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def deployment(in_flight: list[int], *, low: int = 1, high: int = 4, **auto: Any) -> Deployment:
    spec = DeploymentSpec.model_validate(
        {
            "name": "smol",
            "model": {"name": "smol", "size_bytes": 100_000_000},
            "replicas": {"min": low, "max": high},
            "autoscaling": {"target": 2, "scale_down_delay_seconds": 30, **auto},
        }
    )
    allocation = Allocation(
        pool="p", kind="cpu", cpus=1, memory_gib=1, estimated_gib=1, max_replicas=8
    )
    replicas = [
        ReplicaStatus(index=i, state=ReplicaState.READY, in_flight=n)
        for i, n in enumerate(in_flight)
    ]
    return Deployment(
        name="smol", spec=spec, allocation=allocation, desired=len(in_flight), replicas=replicas
    )


class Recorder:
    def __init__(self, current: Deployment) -> None:
        self.current = current
        self.calls: list[tuple[str, int, str]] = []

    async def list(self) -> builtins.list[Deployment]:
        return [self.current]

    async def scale(self, name: str, replicas: int, reason: str = "") -> Deployment:
        self.calls.append((name, replicas, reason))
        return self.current


def test_scales_up_on_the_mean_of_recent_samples_after_the_cooldown() -> None:
    clock = Clock()
    scaler = Autoscaler(Recorder(deployment([0])), up_cooldown_seconds=5, clock=clock)
    assert scaler.decide(deployment([6])) is not None
    clock.now += 1
    early = scaler.decide(deployment([6]))
    assert early is not None
    assert early.desired == 1
    clock.now += 5
    decision = scaler.decide(deployment([6]))
    assert decision is not None
    assert decision.desired == 3  # ceil(6 / target 2)
    assert "6.0 in flight" in decision.reason


def test_never_above_max_or_below_min() -> None:
    clock = Clock()
    scaler = Autoscaler(Recorder(deployment([0])), up_cooldown_seconds=0, clock=clock)
    decision = scaler.decide(deployment([40], high=3))
    assert decision is not None
    assert decision.desired == 3
    clock.now += 100
    idle = deployment([0, 0, 0], low=2, high=3)
    scaler.decide(idle)
    clock.now += 31
    decision = scaler.decide(idle)
    assert decision is not None
    assert decision.desired == 2


def test_scales_down_only_after_a_quiet_delay() -> None:
    clock = Clock()
    scaler = Autoscaler(Recorder(deployment([0])), up_cooldown_seconds=0, clock=clock)
    busy = deployment([2, 2, 2])
    scaler.decide(busy)
    clock.now += 20
    quiet = deployment([0, 0, 1])
    decision = scaler.decide(quiet)
    assert decision is not None
    assert decision.desired == 3
    clock.now += 15
    decision = scaler.decide(quiet)
    assert decision is not None
    assert decision.desired == 1  # at most 1 in flight for 30 s: ceil(1 / 2)
    assert "for 30s" in decision.reason


def test_scale_to_zero_when_min_is_zero() -> None:
    clock = Clock()
    scaler = Autoscaler(Recorder(deployment([0])), clock=clock)
    idle = deployment([0], low=0)
    scaler.decide(idle)
    clock.now += 31
    decision = scaler.decide(idle)
    assert decision is not None
    assert decision.desired == 0


def test_fixed_deployments_are_left_alone() -> None:
    scaler = Autoscaler(Recorder(deployment([0])))
    assert scaler.decide(deployment([9], low=2, high=2)) is None


async def test_tick_applies_a_decision_with_its_reason() -> None:
    clock = Clock()
    recorder = Recorder(deployment([8]))
    scaler = Autoscaler(recorder, up_cooldown_seconds=0, clock=clock)
    clock.now += 1
    decisions = await scaler.tick()
    assert [d.desired for d in decisions] == [4]
    assert recorder.calls == [("smol", 4, "autoscaler: 8.0 in flight")]
