"""The release pipeline as a durable DBOS workflow.

register -> deploy on standby -> smoke -> quality gates -> canary steps (analysed) ->
optional approval -> promote; any failure fails the release at its stage, a failed canary
rolls back. The walk in :meth:`ReleasePipeline.walk` is deterministic; everything it does
to the world is a step of :class:`ReleaseBinding`, and every wait is a durable
``DBOS.recv`` (which also carries pause, resume, abort, promote and approval messages), so
a control plane restarted mid-rollout resumes at the step where it stopped.

Steps never raise for an expected failure: they return ``{"ok": False, "reason": ...}``,
which DBOS records like any result.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from dbos import DBOS, DBOSConfiguredInstance, SetWorkflowID, WorkflowHandleAsync

from atrium.bus.base import EventPublisher
from atrium.bus.events import AlertFired, GateFinished, ReleaseStageChanged, RolloutStepped
from atrium.core.durable import forget_instance
from atrium.core.errors import AtriumError, ConflictError, NotFoundError
from atrium.observability.metrics import ReleaseMetrics
from atrium.registry.service import RegistryService
from atrium.registry.types import AliasSet, LineageCreate, ModelCreate, VersionCreate
from atrium.releases.analysis import ArmObserver
from atrium.releases.deployments import DeploymentCreate, DeploymentService
from atrium.releases.policy import ReleasePolicy
from atrium.releases.rollout import Judgement, canary_route, judge, single_route
from atrium.runtime.base import ModelBackend
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.schema import ChatCompletionRequest
from atrium.store.registry import VersionDraft
from atrium.store.releases import ReleaseChange, ReleaseRecord, ReleaseRepository

log = logging.getLogger("atrium.releases")

CONTROL_TOPIC: Final = "release-control"
#: Control messages an operator sends a running release.
CONTROLS: Final = frozenset(
    {"pause", "resume", "abort", "promote", "rollback", "approve", "reject"}
)
_PAUSE_WAIT = 7 * 86_400.0

Result = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GateOutcome:
    """What the quality gates said of a candidate."""

    passed: bool
    reason: str
    report: dict[str, Any]


#: Runs a gate suite: (suite, candidate, baseline or None, version metadata) -> outcome.
GateRunner = Callable[
    [str, ModelBackend, ModelBackend | None, dict[str, Any]], Awaitable[GateOutcome]
]


class RouteWriter(Protocol):
    """Sets a gateway route on every replica (the gateway's ``RouteAdmin``)."""

    async def put(self, name: str, body: dict[str, Any]) -> object:
        """Validate and apply a route spec."""


@dataclass(frozen=True, slots=True)
class PipelineParts:
    """What the pipeline's steps act on."""

    releases: ReleaseRepository
    registry: RegistryService
    deployments: DeploymentService
    catalog: ModelCatalog
    routes: RouteWriter
    observer: ArmObserver
    publisher: EventPublisher
    metrics: ReleaseMetrics
    gates: GateRunner
    policies: Mapping[str, ReleasePolicy]


class ReleasePipeline:
    """Starts, walks and steers releases."""

    def __init__(self, parts: PipelineParts, *, name: str = "atrium-releases") -> None:
        self.parts = parts
        self._name = name
        self._binding: ReleaseBinding | None = None

    def bind(self) -> None:
        """Register with DBOS before it launches (recovery finds unfinished releases by it)."""
        if self._binding is None:
            self._binding = ReleaseBinding(self, self._name)

    def unbind(self) -> None:
        """Forget the DBOS binding (the platform is closing)."""
        if self._binding is not None:
            forget_instance(self._binding)
            self._binding = None

    @property
    def binding(self) -> ReleaseBinding:
        """The DBOS instance (after :meth:`bind`)."""
        if self._binding is None:
            raise RuntimeError("the release pipeline is not bound to DBOS")
        return self._binding

    async def start(self, release_id: str) -> None:
        """Run a release's pipeline (idempotent: the workflow id is the release id)."""
        with SetWorkflowID(release_id):
            await DBOS.start_workflow_async(self.binding.run, release_id)

    async def control(self, release_id: str, action: str) -> None:
        """Send pause, resume, abort, promote, rollback, approve or reject to a release."""
        await DBOS.send_async(release_id, action, topic=CONTROL_TOPIC)

    async def wait(self, release_id: str) -> str:
        """Wait for a release's pipeline to end; its final status."""
        handle: WorkflowHandleAsync[str] = await DBOS.retrieve_workflow_async(release_id)
        result: str = await handle.get_result()
        return result

    # -- the walk (deterministic: only steps and durable waits touch the world) ----------

    async def walk(self, release_id: str) -> str:
        """Every stage of one release, in order."""
        steps = self.binding
        plan = await steps.prepare(release_id)
        if not plan["ok"]:
            return await steps.fail(release_id, "detected", plan["reason"])
        for stage in ("register", "deploy", "smoke", "gates"):
            result = await steps.stage(release_id, stage)
            if not result["ok"]:
                return await steps.fail(release_id, result["stage"], result["reason"])
        # The first version has nothing to canary against: it goes on to promotion.
        outcome = "pass" if plan["stable"] is None else await self._canary(release_id, plan)
        if outcome == "pass" and plan["require_approval"]:
            outcome = await self._approval(release_id, plan["approval_timeout"])
        if outcome in ("pass", "promote"):
            return await steps.promote(release_id)
        if outcome == "abort":
            return await steps.roll_back(release_id, "aborted by an operator", "aborted")
        return await steps.roll_back(release_id, outcome.removeprefix("rollback: "), "rolled_back")

    async def _canary(self, release_id: str, plan: Result) -> str:
        steps = self.binding
        canary_start = await steps.clock()
        for weight in plan["weights"]:
            await steps.set_weight(release_id, weight)
            outcome = await self._hold(release_id, weight, canary_start, plan)
            if outcome != "pass":
                return outcome
        return "pass"

    async def _hold(self, release_id: str, weight: float, canary_start: float, plan: Result) -> str:
        """Hold one step: analyse it ``checks`` times an interval until it passes or fails."""
        steps, failures, holds = self.binding, 0, 0
        every = plan["interval"] / plan["checks"]
        while True:
            start = await steps.clock()
            for check in range(plan["checks"]):
                control = await self._wait_control(release_id, every)
                if control is not None:
                    return control
                final = check == plan["checks"] - 1
                verdict = await steps.analyse(release_id, weight, start, canary_start, final)
                if verdict["verdict"] == "fail":
                    failures += 1
                    if failures >= plan["threshold"]:
                        return f"rollback: {verdict['summary']}"
                elif verdict["verdict"] == "pass":
                    return "pass"
            holds += 1
            if holds > plan["max_holds"]:
                if plan["on_no_traffic"] == "advance":
                    await steps.note(release_id, f"advanced at {weight:g}% without enough traffic")
                    return "pass"
                return "rollback: not enough traffic to judge the canary"

    async def _wait_control(self, release_id: str, seconds: float) -> str | None:
        """Wait up to ``seconds`` for an operator; pause blocks here until resumed."""
        message = await DBOS.recv_async(CONTROL_TOPIC, timeout_seconds=seconds)
        if message is None or message in ("resume", "approve", "reject"):
            return None
        if message != "pause":
            return "rollback: rolled back by an operator" if message == "rollback" else message
        await self.binding.set_status(release_id, "paused")
        while True:
            message = await DBOS.recv_async(CONTROL_TOPIC, timeout_seconds=_PAUSE_WAIT)
            if message in ("resume", None):
                await self.binding.set_status(release_id, "running")
                return None
            if message in ("abort", "promote", "rollback"):
                return "rollback: rolled back by an operator" if message == "rollback" else message

    async def _approval(self, release_id: str, wait_seconds: float) -> str:
        await self.binding.set_stage(release_id, "awaiting_approval")
        while True:
            message = await DBOS.recv_async(CONTROL_TOPIC, timeout_seconds=wait_seconds)
            if message is None:
                return "rollback: no approval before the timeout"
            if message in ("approve", "promote"):
                return "pass"
            if message in ("reject", "rollback"):
                return "rollback: promotion rejected by an operator"
            if message == "abort":
                return "abort"

    # -- steps (called through the binding, so DBOS records them) -------------------------

    async def do_prepare(self, release_id: str) -> Result:
        release = await self.parts.releases.get(release_id)
        policy = self.parts.policies.get(release.model)
        if policy is None:
            return {"ok": False, "reason": f"no release policy for model {release.model!r}"}
        canary = policy.canary
        return {
            "ok": True,
            "stable": await self._stable(release.model, policy),
            "weights": canary.weights(),
            "interval": canary.interval_seconds,
            "checks": canary.checks_per_interval,
            "threshold": canary.threshold,
            "max_holds": canary.max_holds,
            "on_no_traffic": canary.on_no_traffic,
            "require_approval": policy.require_approval,
            "approval_timeout": policy.approval_timeout_seconds,
        }

    async def _stable(self, model: str, policy: ReleasePolicy) -> str | None:
        """The deployment serving the production version now, if any."""
        try:
            version = await self.parts.registry.resolve(model, "production")
        except NotFoundError:
            return None
        name = policy.deployment_name(version.version)
        try:
            await self.parts.deployments.status(name)
        except NotFoundError:
            return None
        return name

    async def do_stage(self, release_id: str, stage: str) -> Result:
        release = await self._enter(release_id, _STAGE_NAMES[stage])
        policy = self.parts.policies[release.model]
        started = time.monotonic()
        try:
            result = await _STAGES[stage](self, release, policy)
        except AtriumError as exc:
            result = {"ok": False, "reason": exc.message}
        self.parts.metrics.stage_seconds.labels(_STAGE_NAMES[stage]).observe(
            time.monotonic() - started
        )
        return {**result, "stage": _STAGE_NAMES[stage]}

    async def _register(self, release: ReleaseRecord, policy: ReleasePolicy) -> Result:
        registry = self.parts.registry
        if release.version is not None:
            return {"ok": True}
        with contextlib.suppress(ConflictError):
            await registry.create_model(ModelCreate(name=release.model))
        existing = [
            v
            for v in await registry.versions(release.model)
            if v.metadata.get("release_id") == release.release_ref
        ]
        if existing:
            version = existing[-1]  # registered before a crash: reuse, never twice
        else:
            body = VersionCreate(
                source=release.uri,
                source_name=release.source,
                release_id=release.release_ref,
                metadata=dict(policy.metadata),
            )

            async def fits(draft: VersionDraft) -> None:
                # A file no pool can hold is refused before it is copied or numbered
                # (the number, not held yet, does not change where it would be placed).
                self.parts.deployments.check_fit(_deployment_body(release, policy, 1), draft)

            version = await registry.register_version(release.model, body, admit=fits)
        # The registry records the release link itself (release_id -> version).
        await self.parts.releases.update(release.id, ReleaseChange(version=version.version))
        return {"ok": True}

    async def _deploy(self, release: ReleaseRecord, policy: ReleasePolicy) -> Result:
        assert release.version is not None
        name = policy.deployment_name(release.version)
        body = _deployment_body(release, policy, release.version)
        try:
            await self.parts.deployments.create(body)
        except ConflictError:
            await self.parts.deployments.status(name)  # deployed before a restart: reuse
        return {"ok": True}

    async def _smoke(self, release: ReleaseRecord, policy: ReleasePolicy) -> Result:
        assert release.version is not None
        backend = self.parts.catalog.resolve(policy.deployment_name(release.version)).backend
        health = await backend.health()
        if not health.ready:
            return {"ok": False, "reason": f"standby is not healthy: {health.detail}"}
        request = ChatCompletionRequest.model_validate(
            {
                "model": policy.deployment_name(release.version),
                "messages": [{"role": "user", "content": "Say OK."}],
                "max_tokens": 8,
                "temperature": 0,
            }
        )
        answer = await backend.chat(request)
        choices = answer.get("choices") or []
        if not choices or not isinstance(choices[0].get("message"), dict):
            return {"ok": False, "reason": "smoke check: the standby's answer has no message"}
        return {"ok": True}

    async def _gates(self, release: ReleaseRecord, policy: ReleasePolicy) -> Result:
        assert release.version is not None
        if policy.gates is None:
            return {"ok": True}
        catalog = self.parts.catalog
        candidate = catalog.resolve(policy.deployment_name(release.version)).backend
        stable = await self._stable(release.model, policy)
        baseline = catalog.resolve(stable).backend if stable is not None else None
        view = await self.parts.registry.describe_version(release.model, release.version)
        outcome = await self.parts.gates(policy.gates, candidate, baseline, view.version.metadata)
        detail = {"suite": policy.gates, "passed": outcome.passed, "report": outcome.report}
        link = LineageCreate(kind="gate", ref=release.id, detail=detail)
        await self.parts.registry.add_lineage(release.model, release.version, link)
        for gate in outcome.report.get("gates", []):
            self.parts.publisher.publish_nowait(
                GateFinished(
                    release_id=release.id,
                    model=release.model,
                    model_version=release.version,
                    gate=str(gate.get("name")),
                    passed=bool(gate.get("passed")),
                    summary=str(gate.get("reason") or ""),
                )
            )
        change = ReleaseChange(detail={"event": f"gates: {outcome.reason}"})
        await self.parts.releases.update(release.id, change)
        return {"ok": outcome.passed, "reason": outcome.reason}

    async def do_set_weight(self, release_id: str, weight: float) -> None:
        release = await self.parts.releases.get(release_id)
        policy = self.parts.policies[release.model]
        assert release.version is not None
        stable = await self._stable(release.model, policy)
        candidate = policy.deployment_name(release.version)
        if stable is None:
            raise NotFoundError("the stable deployment is gone", param="release")
        await self.parts.routes.put(
            policy.public_name, canary_route(stable, candidate, weight, policy.canary)
        )
        change = ReleaseChange(
            stage="canary", weight=weight, detail={"event": f"canary at {weight:g}%"}
        )
        await self.parts.releases.update(release_id, change)
        self.parts.metrics.canary_weight.labels(policy.public_name).set(weight)

    async def do_analyse(
        self, release_id: str, weight: float, start: float, canary_start: float, final: bool
    ) -> Result:
        release = await self.parts.releases.get(release_id)
        policy = self.parts.policies[release.model]
        assert release.version is not None
        stable = await self._stable(release.model, policy) or ""
        observer, analysis = self.parts.observer, policy.canary.analysis
        # Errors count from the step's start, latency once the canary's replicas are warm.
        warm = canary_start + analysis.warmup_seconds
        canary = observer.window(policy.deployment_name(release.version), start, timed_from=warm)
        # The stable arm is compared over the whole canary: at high weights it gets little.
        judgement = judge(observer.window(stable, canary_start), canary, analysis, final=final)
        if judgement.verdict != "hold" or final:
            await self._record_judgement(release, weight, judgement)
        return {"verdict": judgement.verdict, "summary": judgement.summary()}

    async def _record_judgement(
        self, release: ReleaseRecord, weight: float, judgement: Judgement
    ) -> None:
        assert release.version is not None
        detail = {
            "event": f"analysis at {weight:g}%: {judgement.verdict}",
            "reasons": judgement.reasons,
            "metrics": judgement.metrics,
        }
        await self.parts.releases.update(release.id, ReleaseChange(detail=detail))
        verdict = {"pass": "advance", "fail": "rollback", "hold": "hold"}[judgement.verdict]
        self.parts.publisher.publish_nowait(
            RolloutStepped(
                release_id=release.id,
                model=release.model,
                model_version=release.version,
                weight=weight,
                verdict=verdict,
                reason=judgement.summary() if judgement.reasons else None,
            )
        )

    async def do_promote(self, release_id: str) -> str:
        release = await self.parts.releases.get(release_id)
        policy = self.parts.policies[release.model]
        assert release.version is not None
        old = await self._stable(release.model, policy)
        candidate = policy.deployment_name(release.version)
        await self.parts.routes.put(policy.public_name, single_route(candidate))
        await self.parts.registry.set_alias(
            release.model, "production", AliasSet(version=release.version)
        )
        if old is not None and old != candidate:
            await self._retire(old, policy.drain_seconds)
        link = LineageCreate(kind="rollout", ref=release.id, detail={"outcome": "promoted"})
        await self.parts.registry.add_lineage(release.model, release.version, link)
        change = ReleaseChange(stage="promoted", status="succeeded", weight=100.0, finished=True)
        done = await self.parts.releases.update(release_id, change)
        self.parts.metrics.canary_weight.labels(policy.public_name).set(100.0)
        self.parts.metrics.detection_to_production.labels(release.model).observe(
            (done.updated_at - done.created_at).total_seconds()
        )
        self._finished(done, "promoted")
        return "succeeded"

    async def _retire(self, name: str, drain_seconds: float) -> None:
        with contextlib.suppress(NotFoundError):  # retired before a restart
            await self.parts.deployments.delete(name, drain_seconds)

    async def do_roll_back(self, release_id: str, reason: str, status: str) -> str:
        release = await self.parts.releases.get(release_id)
        policy = self.parts.policies[release.model]
        assert release.version is not None
        stable = await self._stable(release.model, policy)
        if stable is not None:
            await self.parts.routes.put(policy.public_name, single_route(stable))
        self.parts.metrics.canary_weight.labels(policy.public_name).set(0.0)
        await self._retire(policy.deployment_name(release.version), 0.0)
        link = LineageCreate(kind="rollout", ref=release.id, detail={"outcome": status})
        await self.parts.registry.add_lineage(release.model, release.version, link)
        change = ReleaseChange(
            stage=status, status=status, weight=0.0, reason=reason, finished=True
        )
        done = await self.parts.releases.update(release_id, change)
        self._finished(done, status)
        self.parts.publisher.publish_nowait(
            AlertFired(
                name="release_rolled_back",
                severity="warning",
                summary=f"{release.model} version {release.version} {status}: {reason}",
                labels={"model": release.model, "release": release.id},
            )
        )
        return status

    async def do_fail(self, release_id: str, stage: str, reason: str) -> str:
        release = await self.parts.releases.get(release_id)
        policy = self.parts.policies.get(release.model)
        if policy is not None and release.version is not None:
            await self._retire(policy.deployment_name(release.version), 0.0)
        change = ReleaseChange(status="failed", reason=f"{stage}: {reason}", finished=True)
        done = await self.parts.releases.update(release_id, change)
        self._finished(done, "failed")
        return "failed"

    def _finished(self, release: ReleaseRecord, outcome: str) -> None:
        self.parts.metrics.outcomes.labels(release.model, outcome).inc()
        self._publish_stage(release)

    def _publish_stage(self, release: ReleaseRecord) -> None:
        self.parts.publisher.publish_nowait(
            ReleaseStageChanged(
                release_id=release.id,
                model=release.model,
                model_version=release.version,
                stage=release.stage,
                status=release.status,
                reason=release.reason,
            )
        )

    async def _enter(self, release_id: str, stage: str) -> ReleaseRecord:
        release = await self.parts.releases.update(release_id, ReleaseChange(stage=stage))
        self._publish_stage(release)
        return release

    async def do_set_stage(self, release_id: str, stage: str) -> None:
        await self._enter(release_id, stage)

    async def do_set_status(self, release_id: str, status: str) -> None:
        release = await self.parts.releases.update(release_id, ReleaseChange(status=status))
        self._publish_stage(release)

    async def do_note(self, release_id: str, text: str) -> None:
        await self.parts.releases.update(release_id, ReleaseChange(detail={"event": text}))


def _deployment_body(
    release: ReleaseRecord, policy: ReleasePolicy, version: int
) -> DeploymentCreate:
    """The deployment a release's version gets, shaped by its policy."""
    template = policy.deployment
    return DeploymentCreate(
        name=policy.deployment_name(version),
        model=release.model,
        version=version,
        replicas=template.replicas,
        resources=template.resources,
        context_length=template.context_length,
    )


_STAGE_NAMES: Final = {
    "register": "registering",
    "deploy": "deploying",
    "smoke": "smoke_testing",
    "gates": "gating",
}
_STAGES: Final[
    dict[str, Callable[[ReleasePipeline, ReleaseRecord, ReleasePolicy], Awaitable[Result]]]
] = {
    "register": ReleasePipeline._register,
    "deploy": ReleasePipeline._deploy,
    "smoke": ReleasePipeline._smoke,
    "gates": ReleasePipeline._gates,
}


@DBOS.dbos_class()
class ReleaseBinding(DBOSConfiguredInstance):
    """DBOS's handle on the pipeline: the workflow and its steps."""

    def __init__(self, pipeline: ReleasePipeline, name: str) -> None:
        self.pipeline = pipeline
        super().__init__(config_name=name)

    @DBOS.workflow(name="atrium.release")
    async def run(self, release_id: str) -> str:
        """One release, start to end; a step that failed unexpectedly fails the release."""
        try:
            return await self.pipeline.walk(release_id)
        except Exception as exc:  # noqa: BLE001 - recorded on the release, never left running
            reason = exc.message if isinstance(exc, AtriumError) else repr(exc)
            log.warning("release %s failed: %s", release_id, reason)
            return await self.fail(release_id, "pipeline", reason)

    @DBOS.step(name="release.prepare")
    async def prepare(self, release_id: str) -> Result:
        """The release's plan: its policy's steps and the stable deployment."""
        return await self.pipeline.do_prepare(release_id)

    @DBOS.step(name="release.stage")
    async def stage(self, release_id: str, stage: str) -> Result:
        """Register, deploy, smoke-test or gate."""
        return await self.pipeline.do_stage(release_id, stage)

    @DBOS.step(name="release.clock")
    async def clock(self) -> float:
        """Now (recorded, so a replay sees the same time)."""
        return time.time()

    @DBOS.step(name="release.set_weight")
    async def set_weight(self, release_id: str, weight: float) -> None:
        """Route ``weight`` percent of traffic to the candidate."""
        await self.pipeline.do_set_weight(release_id, weight)

    @DBOS.step(name="release.analyse")
    async def analyse(
        self, release_id: str, weight: float, start: float, canary_start: float, final: bool
    ) -> Result:
        """Judge the canary step so far."""
        return await self.pipeline.do_analyse(release_id, weight, start, canary_start, final)

    @DBOS.step(name="release.promote")
    async def promote(self, release_id: str) -> str:
        """All traffic to the new version, alias moved, old version drained."""
        return await self.pipeline.do_promote(release_id)

    @DBOS.step(name="release.roll_back")
    async def roll_back(self, release_id: str, reason: str, status: str) -> str:
        """All traffic back to stable, the candidate stopped, an alert fired."""
        return await self.pipeline.do_roll_back(release_id, reason, status)

    @DBOS.step(name="release.fail")
    async def fail(self, release_id: str, stage: str, reason: str) -> str:
        """End the release at a stage, removing what it deployed."""
        return await self.pipeline.do_fail(release_id, stage, reason)

    @DBOS.step(name="release.set_stage")
    async def set_stage(self, release_id: str, stage: str) -> None:
        """Record a stage."""
        await self.pipeline.do_set_stage(release_id, stage)

    @DBOS.step(name="release.set_status")
    async def set_status(self, release_id: str, status: str) -> None:
        """Record a status (paused, running)."""
        await self.pipeline.do_set_status(release_id, status)

    @DBOS.step(name="release.note")
    async def note(self, release_id: str, text: str) -> None:
        """Add a line to the release's timeline."""
        await self.pipeline.do_note(release_id, text)
