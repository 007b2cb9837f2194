"""A/B experiments: a fixed, sticky split between two models, metrics per arm, a verdict.

Starting an experiment sets a gateway route (the experiment's name is the public model
name) that splits traffic between arms A and B, sticky by the caller's ``user`` field or a
header, so each user stays on one arm. Each arm's latency, time to first token, errors,
tokens and feedback come from the gateway's events (:class:`ArmObserver`); the verdict is a
Mann-Whitney U test on latencies and two-proportion tests on success and feedback rates.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atrium.bus.base import EventPublisher
from atrium.bus.events import FeedbackGiven
from atrium.core.errors import ConflictError, InvalidRequestError
from atrium.releases.analysis import ArmObserver, ArmWindow
from atrium.releases.pipeline import RouteWriter
from atrium.releases.rollout import p95
from atrium.releases.stats import ArmMetrics, MinimumSamples, Verdict, compare_arms
from atrium.runtime.routing import sticky_arm
from atrium.store.releases import ExperimentRecord, ExperimentRepository

_NAME = r"^[a-z0-9][a-z0-9._-]{0,50}$"


class ExperimentCreate(BaseModel):
    """Body of ``POST /v1/experiments``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="The public model name callers use.")
    a: str = Field(min_length=1, max_length=200, description="Arm A: a served model.")
    b: str = Field(min_length=1, max_length=200, description="Arm B: a served model.")
    split: float = Field(50.0, gt=0, lt=100, description="Percent of users on arm B.")
    sticky: Literal["user", "header"] = "user"
    sticky_header: str = Field("x-atrium-session", max_length=100)
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Significance level.")
    minimums: MinimumSamples = Field(default_factory=MinimumSamples)

    @model_validator(mode="after")
    def _two_arms(self) -> ExperimentCreate:
        if self.a == self.b:
            raise ValueError("arms a and b must be different models")
        return self

    def arms(self) -> list[tuple[str, float]]:
        """The route's arms and their weights."""
        return [(self.a, 100.0 - self.split), (self.b, self.split)]


class FeedbackCreate(BaseModel):
    """Body of ``POST /v1/experiments/{name}/feedback``."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=200, description="The sticky key (user id).")
    rating: Literal["up", "down"]


class RatingCreate(BaseModel):
    """Body of ``POST /v1/feedback``: a thumbs up or down for the model that answered."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=200,
        description="The model that answered: the x-atrium-routed-to header, or its name.",
    )
    rating: Literal["up", "down"]
    user: str | None = Field(None, max_length=200)


class ExperimentStop(BaseModel):
    """Body of ``POST /v1/experiments/{name}/stop``."""

    model_config = ConfigDict(extra="forbid")

    keep: Literal["a", "b", "winner"] = Field(
        "winner", description="The arm that keeps the traffic (winner: B only if it won)."
    )


class ExperimentService:
    """Starts, reports on and ends A/B experiments."""

    def __init__(
        self,
        *,
        repo: ExperimentRepository,
        routes: RouteWriter,
        observer: ArmObserver,
        publisher: EventPublisher,
    ) -> None:
        self._repo = repo
        self._routes = routes
        self._observer = observer
        self._publisher = publisher

    async def create(self, body: ExperimentCreate) -> ExperimentRecord:
        """Split the traffic (the route applies on every replica) and record the experiment."""
        route: dict[str, Any] = {
            "targets": [{"model": m, "weight": w} for m, w in body.arms()],
            "sticky": body.sticky,
            "sticky_header": body.sticky_header,
        }
        await self._routes.put(body.name, route)
        spec = {**body.model_dump(mode="json"), "started": self._observer.now()}
        return await self._repo.create(body.name, spec)

    async def get(self, name: str) -> ExperimentRecord:
        """An experiment (404 if unknown)."""
        return await self._repo.get(name)

    async def list(self) -> builtins.list[ExperimentRecord]:
        """Every experiment, newest first."""
        return await self._repo.list()

    async def results(
        self, name: str
    ) -> tuple[ExperimentRecord, builtins.list[ArmWindow], Verdict]:
        """Each arm's numbers since the start and the statistical verdict."""
        record = await self._repo.get(name)
        body = ExperimentCreate.model_validate(_body(record.spec))
        since = float(record.spec["started"])
        until = record.ended_at.timestamp() if record.ended_at is not None else None
        first, second = (self._observer.window(arm, since, until) for arm in (body.a, body.b))
        verdict = compare_arms(
            _metrics(first), _metrics(second), alpha=body.alpha, minimums=body.minimums
        )
        return record, [first, second], verdict

    async def feedback(self, name: str, body: FeedbackCreate) -> str:
        """Count a user's rating for the arm that user is on; returns the arm."""
        record = await self._running(name)
        spec = ExperimentCreate.model_validate(_body(record.spec))
        arm = sticky_arm(name, body.user, spec.arms())
        event = FeedbackGiven(
            target=arm, positive=body.rating == "up", experiment=name, user=body.user
        )
        self._publisher.publish_nowait(event)
        return arm

    def rate(self, body: RatingCreate, known: Callable[[str], str]) -> str:
        """Count a rating for the model that answered (canary analysis reads it too).

        ``known`` resolves a public name to the served model (404 when there is none).
        """
        target = known(body.model)
        event = FeedbackGiven(target=target, positive=body.rating == "up", user=body.user)
        self._publisher.publish_nowait(event)
        return target

    async def stop(self, name: str, body: ExperimentStop) -> ExperimentRecord:
        """End the experiment: the kept arm takes all traffic; the verdict is stored."""
        record, windows, verdict = await self.results(name)
        if record.status != "running":
            raise ConflictError(f"the experiment {name!r} has ended", param="name")
        spec = ExperimentCreate.model_validate(_body(record.spec))
        keep = {"a": spec.a, "b": spec.b}.get(body.keep)
        if keep is None:
            keep = spec.b if verdict.winner == spec.b else spec.a
        await self._routes.put(name, {"targets": [{"model": keep, "weight": 1.0}]})
        summary = {**verdict.model_dump(mode="json"), "kept": keep}
        summary["arms"] = [window_public(w) for w in windows]
        return await self._repo.finish(name, "concluded", summary)

    async def _running(self, name: str) -> ExperimentRecord:
        record = await self._repo.get(name)
        if record.status != "running":
            raise InvalidRequestError(f"the experiment {name!r} has ended", param="name")
        return record


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "started"}


def _metrics(window: ArmWindow) -> ArmMetrics:
    return ArmMetrics(
        name=window.arm,
        latencies_ms=window.latencies_ms,
        ttfts_ms=window.ttfts_ms,
        requests=window.requests,
        errors=window.errors,
        feedback_up=window.feedback_up,
        feedback_down=window.feedback_down,
        tokens=window.tokens,
    )


def window_public(window: ArmWindow) -> dict[str, Any]:
    """An arm's numbers as the API shows them."""
    return {
        "arm": window.arm,
        "requests": window.requests,
        "errors": window.errors,
        "error_rate": round(window.error_rate, 4),
        "p95_latency_ms": p95(window.latencies_ms),
        "p95_ttft_ms": p95(window.ttfts_ms),
        "tokens": window.tokens,
        "feedback_up": window.feedback_up,
        "feedback_down": window.feedback_down,
    }


def experiment_public(
    record: ExperimentRecord, windows: list[ArmWindow] | None = None, verdict: Verdict | None = None
) -> dict[str, Any]:
    """An experiment as the API shows it (with live results when given)."""
    out: dict[str, Any] = {
        "object": "experiment",
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "spec": _body(record.spec),
        "started_at": int(record.started_at.timestamp()),
        "ended_at": int(record.ended_at.timestamp()) if record.ended_at else None,
        "verdict": record.verdict,
    }
    if windows is not None and verdict is not None and record.status == "running":
        out["arms"] = [window_public(w) for w in windows]
        out["verdict"] = verdict.model_dump(mode="json")
    return out
