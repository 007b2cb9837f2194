"""How a model's releases are rolled out: deployment shape, gates, canary steps, analysis."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atrium.runtime.deployments import ReplicaBounds, Resources

_PUBLIC_NAME = r"^[a-z0-9][a-z0-9._-]{0,50}$"


class CanaryAnalysisPolicy(BaseModel):
    """Thresholds the canary is held to against the stable version (Flagger-style)."""

    model_config = ConfigDict(extra="forbid")

    min_requests: int = Field(
        10, ge=1, description="Requests each arm needs in an interval before it is judged."
    )
    max_error_rate: float = Field(
        0.02, ge=0, le=1, description="Canary error rate allowed above the stable one."
    )
    max_latency_ratio: float = Field(
        1.5, gt=0, description="Canary p95 latency over stable p95 latency, at most."
    )
    max_ttft_ratio: float = Field(
        1.5, gt=0, description="Canary p95 time to first token over stable's, at most."
    )
    latency_floor_ms: float = Field(
        50.0, ge=0, description="p95 differences below this are noise, whatever the ratio."
    )
    warmup_seconds: float = Field(
        0.0,
        ge=0,
        description="Latency of the canary's first seconds is not judged (cold replicas, "
        "empty caches); its errors are.",
    )
    min_feedback: int = Field(
        10, ge=1, description="Votes each arm needs before feedback is compared."
    )
    max_feedback_drop: float = Field(
        0.1, ge=0, le=1, description="Canary's thumbs-up rate allowed below the stable one."
    )


class CanaryPolicy(BaseModel):
    """The steps of traffic shifted onto the new version, and how long each is held."""

    model_config = ConfigDict(extra="forbid")

    step_weights: list[float] | None = Field(
        None, description="Percent of traffic per step (Flagger stepWeights), e.g. 5, 25, 50."
    )
    step_weight: float = Field(
        25.0, gt=0, le=100, description="Increment per step when step_weights is not given."
    )
    max_weight: float = Field(
        100.0, gt=0, le=100, description="Last canary weight before promotion (maxWeight)."
    )
    interval_seconds: float = Field(60.0, gt=0, description="How long each step is held.")
    checks_per_interval: int = Field(
        4, ge=1, le=60, description="Analyses per interval; a clear failure rolls back at once."
    )
    threshold: int = Field(
        1, ge=1, description="Failed analyses before rolling back (Flagger threshold)."
    )
    max_holds: int = Field(
        3, ge=0, description="Extra intervals a step waits for enough traffic to judge."
    )
    on_no_traffic: Literal["advance", "rollback"] = Field(
        "advance", description="After max_holds without enough traffic: go on, or roll back."
    )
    sticky: Literal["none", "user", "header"] = Field(
        "none", description="Keep a caller on one arm during the canary."
    )
    analysis: CanaryAnalysisPolicy = Field(default_factory=CanaryAnalysisPolicy)

    @model_validator(mode="after")
    def _steps_increase(self) -> CanaryPolicy:
        steps = self.step_weights
        if steps is not None:
            if not steps or any(not 0 < w <= 100 for w in steps):
                raise ValueError("step_weights must be percentages in (0, 100]")
            if any(b <= a for a, b in itertools.pairwise(steps)):
                raise ValueError("step_weights must increase")
        return self

    def weights(self) -> list[float]:
        """The canary weights, step by step (percent)."""
        if self.step_weights is not None:
            return [w for w in self.step_weights if w <= self.max_weight] or [self.max_weight]
        out, weight = [], self.step_weight
        while weight < self.max_weight:
            out.append(weight)
            weight += self.step_weight
        return [*out, self.max_weight]


class DeploymentTemplate(BaseModel):
    """The shape of each version's deployment."""

    model_config = ConfigDict(extra="forbid")

    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds)
    resources: Resources = Field(default_factory=Resources)
    context_length: int | None = Field(None, ge=128)


class ReleasePolicy(BaseModel):
    """Everything that decides how a new version of one registry model reaches production."""

    model_config = ConfigDict(extra="forbid")

    public_name: str = Field(
        pattern=_PUBLIC_NAME,
        description="The gateway name callers use; a route over the versions' deployments.",
    )
    deployment: DeploymentTemplate = Field(default_factory=DeploymentTemplate)
    gates: str | None = Field(
        "default", description="Gate suite (releases.gate_suites); null: no gates."
    )
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)
    require_approval: bool = Field(False, description="Wait for a person before promotion.")
    approval_timeout_seconds: float = Field(
        86_400.0, gt=0, description="No decision within this: the release is rolled back."
    )
    drain_seconds: float = Field(30.0, ge=0, description="Old version's drain at promotion.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Metadata added to every version it registers."
    )

    def deployment_name(self, version: int) -> str:
        """The deployment (and catalog model) that serves ``version``."""
        return f"{self.public_name}-v{version}"
