"""The release side of one platform: deployments, the pipeline, its observers and loops.

:func:`build_releases` validates ``settings.releases`` and wires the parts;
:class:`ReleaseSystem` starts and stops them in the order the platform needs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from atrium.bus.base import EventBus, EventPublisher
from atrium.bus.events import ReleaseDetected
from atrium.core.errors import InvalidRequestError
from atrium.core.settings import ReleaseSettings
from atrium.observability.metrics import ReleaseMetrics
from atrium.registry.service import RegistryService
from atrium.releases.analysis import ArmObserver
from atrium.releases.deployments import DeploymentService, ServiceRoutes
from atrium.releases.experiments import ExperimentService
from atrium.releases.gates import GateSuite, GateSuiteConfig
from atrium.releases.hub import HubWebhookConfig, HubWebhookReceiver, build_watcher
from atrium.releases.pipeline import (
    GateOutcome,
    GateRunner,
    PipelineParts,
    ReleasePipeline,
    RouteWriter,
)
from atrium.releases.policy import ReleasePolicy
from atrium.releases.service import ReleaseService
from atrium.releases.watchers import (
    FolderWatcherConfig,
    HuggingFaceWatcherConfig,
    WatcherConfig,
    WatcherRunner,
)
from atrium.runtime.autoscaler import Autoscaler
from atrium.runtime.base import ModelBackend
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.deployers.base import Deployer
from atrium.store import Database
from atrium.store.detections import DetectionRepository
from atrium.store.releases import DeploymentRepository, ExperimentRepository, ReleaseRepository

log = logging.getLogger("atrium.releases")

_POLICIES = TypeAdapter(dict[str, ReleasePolicy])
_WATCHERS = TypeAdapter(list[WatcherConfig])


def _parse(adapter: TypeAdapter[Any], raw: object, field: str) -> Any:
    """A part of ``settings.releases`` validated, or a settings error naming the field."""
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in (field, *first["loc"]))
        raise InvalidRequestError(f"{where}: {first['msg']}", param=field) from None


def parse_policies(raw: Mapping[str, Any]) -> dict[str, ReleasePolicy]:
    """``releases.policies`` validated."""
    policies: dict[str, ReleasePolicy] = _parse(_POLICIES, dict(raw), "releases.policies")
    return policies


def parse_watchers(settings: ReleaseSettings) -> list[WatcherConfig]:
    """``releases.watchers`` validated."""
    watchers: list[WatcherConfig] = _parse(_WATCHERS, settings.watchers, "releases.watchers")
    return watchers


def watched_roots(settings: ReleaseSettings) -> list[Path]:
    """Folders watchers put or find model files in: the registry must accept them."""
    roots: list[Path] = []
    for config in parse_watchers(settings):
        if isinstance(config, HuggingFaceWatcherConfig):
            roots.append(config.download_dir)
        elif isinstance(config, FolderWatcherConfig) and "://" not in config.url:
            roots.append(Path(config.url))
    return roots


@dataclass
class ReleaseSystem:
    """Deployments and releases of one platform."""

    deployments: DeploymentService
    releases: ReleaseService
    pipeline: ReleasePipeline
    observer: ArmObserver
    experiments: ExperimentService
    enabled: bool
    watchers: WatcherRunner | None = None
    autoscaler: Autoscaler | None = None
    webhook: HubWebhookReceiver | None = None
    webhook_path: str | None = None

    async def restore(self) -> None:
        """Bring stored deployments back (before routes over them are applied)."""
        failed = await self.deployments.restore()
        if failed:
            log.warning("deployments not restored: %s", ", ".join(failed))

    def bind(self) -> None:
        """Register the pipeline with DBOS (before the workflow engine launches it)."""
        if self.enabled:
            self.pipeline.bind()

    async def start(self) -> None:
        """Observe traffic and take detections."""
        await self.observer.start()
        if self.enabled:
            await self.releases.start()
            if self.watchers is not None:
                await self.watchers.start()
        if self.autoscaler is not None:
            await self.autoscaler.start()

    async def close(self) -> None:
        """Stop taking detections and observing; forget the DBOS binding."""
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.pipeline.unbind)
            stack.push_async_callback(self.observer.close)
            stack.push_async_callback(self.releases.close)
            if self.autoscaler is not None:
                stack.push_async_callback(self.autoscaler.close)
            if self.watchers is not None:
                stack.push_async_callback(self.watchers.stop)
            if self.webhook is not None:
                stack.push_async_callback(self.webhook.close)


def build_releases(
    settings: ReleaseSettings,
    *,
    workflows_enabled: bool,
    db: Database,
    bus: EventBus,
    publisher: EventPublisher,
    registry: RegistryService,
    deployer: Deployer,
    catalog: ModelCatalog,
    routes: RouteWriter,
    metrics: ReleaseMetrics,
    cache_dir: Path,
    gates: GateRunner | None = None,
    watch: bool = True,
    service_routes: ServiceRoutes | None = None,
) -> ReleaseSystem:
    """Wire the release side from settings."""
    policies = parse_policies(settings.policies)
    deployments = DeploymentService(
        registry=registry,
        deployer=deployer,
        repo=DeploymentRepository(db),
        publisher=publisher,
        cache_dir=cache_dir,
        service_routes=service_routes,
    )
    observer = ArmObserver(bus)
    repo = ReleaseRepository(db)
    parts = PipelineParts(
        releases=repo,
        registry=registry,
        deployments=deployments,
        catalog=catalog,
        routes=routes,
        observer=observer,
        publisher=publisher,
        metrics=metrics,
        gates=gates or gate_runner(settings),
        policies=policies,
    )
    pipeline = ReleasePipeline(parts)
    service = ReleaseService(repo=repo, pipeline=pipeline, policies=policies, bus=bus)
    system = ReleaseSystem(
        deployments=deployments,
        releases=service,
        pipeline=pipeline,
        observer=observer,
        experiments=ExperimentService(
            repo=ExperimentRepository(db), routes=routes, observer=observer, publisher=publisher
        ),
        enabled=settings.enabled and workflows_enabled,
    )
    _add_watchers(system, settings, db, bus, watch=watch)
    if watch:  # workers run the control loops; API-only replicas serve
        system.autoscaler = Autoscaler(
            deployments, interval_seconds=settings.autoscale_interval_seconds
        )
    return system


def _add_watchers(
    system: ReleaseSystem, settings: ReleaseSettings, db: Database, bus: EventBus, *, watch: bool
) -> None:
    """Watchers publish each detection on the bus; the release service starts releases."""
    configs = parse_watchers(settings)
    if not configs or not watch:
        return

    async def detected(event: ReleaseDetected) -> None:
        await bus.publish(event)

    system.watchers = WatcherRunner(
        [build_watcher(c) for c in configs], DetectionRepository(db), detected
    )
    if settings.hub_webhook is not None:
        hook: HubWebhookConfig = _parse(
            TypeAdapter(HubWebhookConfig), settings.hub_webhook, "releases.hub_webhook"
        )
        system.webhook = HubWebhookReceiver(hook.secret, system.watchers)
        system.webhook_path = hook.path


def gate_runner(settings: ReleaseSettings) -> GateRunner:
    """Runs the suite a policy names (``releases.gate_suites``; ``default``: every gate)."""
    configs: dict[str, GateSuiteConfig] = _parse(
        TypeAdapter(dict[str, GateSuiteConfig]), settings.gate_suites, "releases.gate_suites"
    )
    configs.setdefault("default", GateSuiteConfig())
    suites = {name: GateSuite(config) for name, config in configs.items()}  # datasets checked

    async def run(
        suite: str, candidate: ModelBackend, baseline: ModelBackend | None, meta: dict[str, Any]
    ) -> GateOutcome:
        chosen = suites.get(suite)
        if chosen is None:
            known = ", ".join(sorted(suites))
            reason = f"gate suite {suite!r} is not configured (releases.gate_suites has: {known})"
            return GateOutcome(False, reason, {})
        report = await chosen.run(candidate, baseline, meta)
        return GateOutcome(report.passed, report.reason, report.model_dump(mode="json"))

    return run
