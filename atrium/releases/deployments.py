"""Deployments of registry versions: resolved, placed, started, persisted and restored.

A deployment names a registry model and a version (or an alias such as ``production``);
the service resolves it to the stored file (downloaded once into a local cache when the
model store is a bucket), builds the :class:`DeploymentSpec` from the version's metadata,
asks the deployer to run it, and keeps the spec so a restarted control plane brings the
same deployments back.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atrium.bus.base import EventPublisher
from atrium.bus.events import DeploymentScaled
from atrium.core.errors import AtriumError, InvalidRequestError
from atrium.core.http import parse_data
from atrium.core.settings import OpenAICompatModel
from atrium.registry.service import RegistryService
from atrium.registry.types import ALIAS_PATTERN, LineageCreate
from atrium.runtime.backends.openai_compat import OpenAICompatBackend
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.deployers.base import Deployer, Deployment
from atrium.runtime.deployments import (
    Allocation,
    AutoscalingSpec,
    DeploymentSpec,
    ModelArtifact,
    ReplicaBounds,
    Resources,
    Runtime,
)
from atrium.store.registry import VersionDraft, VersionRecord
from atrium.store.releases import DeploymentRepository

log = logging.getLogger("atrium.deployments")

_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_DEFAULT_CONTEXT = 2048


class DeploymentCreate(BaseModel):
    """Body of ``POST /v1/deployments``: serve a registry version under a public name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME_PATTERN, description="Public model name it is served as.")
    model: str = Field(min_length=1, max_length=100, description="Registry model.")
    version: int | None = Field(None, ge=1, description="Registry version (or give alias).")
    alias: str | None = Field(None, pattern=ALIAS_PATTERN, description="Or a registry alias.")
    runtime: Runtime | None = Field(None, description="Default: llamacpp for GGUF, vllm else.")
    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds)
    resources: Resources = Field(default_factory=Resources)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    context_length: int | None = Field(None, ge=128, le=1_048_576)
    aliases: list[str] = Field(default_factory=list, max_length=20)


class ScaleRequest(BaseModel):
    """Body of ``POST /v1/deployments/{name}/scale``."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=1000)


class ServiceRoutes:
    """Serves deployments that run elsewhere (a cluster) through the catalog.

    The local deployer adds its replicas to the catalog itself; a Kubernetes deployment
    is reached through its Service, as any OpenAI-compatible upstream.
    """

    def __init__(self, catalog: ModelCatalog, url_of: Callable[[str], str]) -> None:
        self._catalog = catalog
        self._url_of = url_of

    def add(self, spec: DeploymentSpec) -> None:
        """Route ``spec.name`` (and its aliases) to the deployment's Service."""
        upstream = OpenAICompatModel(
            base_url=self._url_of(spec.name),
            upstream_model=spec.name,
            aliases=spec.aliases,
            health_check_seconds=0,
        )
        backend = OpenAICompatBackend(spec.name, upstream)
        self._catalog.add_model(spec.name, backend, tuple(spec.aliases))

    async def remove(self, name: str) -> None:
        """Stop routing to a deployment."""
        entry = self._catalog.remove_model(name)
        if entry is not None:
            await entry.backend.close()


class DeploymentService:
    """Creates, scales, stops and restores deployments of registry versions."""

    def __init__(
        self,
        *,
        registry: RegistryService,
        deployer: Deployer,
        repo: DeploymentRepository,
        publisher: EventPublisher,
        cache_dir: Path,
        service_routes: ServiceRoutes | None = None,
    ) -> None:
        self._registry = registry
        self._deployer = deployer
        self._repo = repo
        self._publisher = publisher
        self._cache_dir = cache_dir
        self._routes = service_routes
        self._lock = asyncio.Lock()

    @property
    def deployer(self) -> Deployer:
        """Where the replicas run."""
        return self._deployer

    async def create(self, body: DeploymentCreate) -> Deployment:
        """Resolve the version, start the replicas (ready on return), keep the spec."""
        spec = await self.spec_for(body)
        async with self._lock:
            deployment = await self._deployer.deploy(spec)
            if self._routes is not None:
                self._routes.add(spec)
            await self._repo.put(spec.name, spec.model_dump(mode="json"), deployment.desired)
        await self._link(spec, "deployment", {"replicas": deployment.desired})
        return deployment

    async def spec_for(self, body: DeploymentCreate) -> DeploymentSpec:
        """The deployment spec of a registry version (400 when it cannot be served)."""
        version = await self._version(body)
        runtime = body.runtime or _runtime_of(version.format)
        path = await self._local_path(version) if runtime != "remote" else None
        meta, size = version.metadata, version.size_bytes
        artifact = _artifact(
            body.model, str(version.version), path, fmt=version.format, meta=meta, size=size
        )
        return _spec(body, artifact, runtime, meta)

    def check_fit(self, body: DeploymentCreate, draft: VersionDraft) -> Allocation:
        """Where a file about to be registered would be deployed as ``body`` asks.

        A 400 naming every pool and why it refuses, when none can hold it: a release
        checks this before the file is copied into the registry.
        """
        runtime = body.runtime or _runtime_of(draft.format)
        if draft.format not in ("gguf", "safetensors"):
            raise InvalidRequestError(f"a {draft.format} file cannot be deployed", param="model")
        meta, size = draft.metadata, draft.size_bytes
        artifact = _artifact(body.model, "new", None, fmt=draft.format, meta=meta, size=size)
        return self._deployer.allocate(_spec(body, artifact, runtime, meta))

    async def _version(self, body: DeploymentCreate) -> VersionRecord:
        if (body.version is None) == (body.alias is None):
            raise InvalidRequestError("give one of version and alias", param="version")
        if body.alias is not None:
            return await self._registry.resolve(body.model, body.alias)
        assert body.version is not None
        view = await self._registry.describe_version(body.model, body.version)
        if view.version.status == "archived":
            msg = f"{body.model} version {body.version} is {view.version.status}"
            raise InvalidRequestError(msg, param="version")
        return view.version

    async def _local_path(self, version: VersionRecord) -> Path:
        store = self._registry.store
        return await asyncio.to_thread(store.materialize, version.artifact_uri, self._cache_dir)

    async def scale(self, name: str, replicas: int, reason: str = "operator") -> Deployment:
        """Change the replica count (new replicas ready on return; removed ones drained)."""
        before = (await self._deployer.status(name)).desired
        deployment = await self._deployer.scale(name, replicas)
        await self._repo.set_desired(name, deployment.desired)
        if deployment.desired != before:
            self._publisher.publish_nowait(
                DeploymentScaled(
                    deployment=name,
                    replicas_before=before,
                    replicas_after=deployment.desired,
                    reason=reason,
                )
            )
        return deployment

    async def status(self, name: str) -> Deployment:
        """A deployment as it is now (404 if unknown)."""
        return await self._deployer.status(name)

    async def list(self) -> builtins.list[Deployment]:
        """Every deployment."""
        return await self._deployer.list()

    async def delete(self, name: str, drain_seconds: float = 30.0) -> None:
        """Drain and stop every replica, then forget the deployment."""
        if self._routes is not None:
            await self._routes.remove(name)
        await self._deployer.stop(name, drain_seconds)
        await self._repo.delete(name)

    async def restore(self) -> builtins.list[str]:
        """Start the stored deployments again (after a restart); the names that failed."""
        failed: builtins.list[str] = []
        running = {d.name for d in await self._deployer.list()}
        for record in await self._repo.all():
            try:
                spec = DeploymentSpec.model_validate(record.spec)
                if record.name not in running:
                    spec = spec.model_copy(
                        update={"replicas": _with_start(spec.replicas, record.desired)}
                    )
                    await self._deployer.deploy(spec)
                if self._routes is not None:
                    self._routes.add(spec)
            except (AtriumError, ValueError) as exc:
                log.warning("deployment %s not restored: %s", record.name, exc)
                failed.append(record.name)
        return failed

    async def _link(
        self, spec: DeploymentSpec, kind: Literal["deployment"], detail: dict[str, object]
    ) -> None:
        version = int(spec.model.version) if spec.model.version.isdigit() else None
        if version is None:
            return
        body = LineageCreate(kind=kind, ref=spec.name, detail=dict(detail))
        await self._registry.add_lineage(spec.model.name, version, body)


def _artifact(
    model: str, version: str, path: Path | None, *, fmt: str, meta: dict[str, Any], size: int | None
) -> ModelArtifact:
    """The served file, with what allocation sizes a replica by."""
    return ModelArtifact(
        name=model,
        version=version,
        path=path,
        format="safetensors" if fmt == "safetensors" else "gguf",
        parameters=meta.get("parameter_count") or None,
        quantization=meta.get("quantization"),
        size_bytes=size,
    )


def _spec(
    body: DeploymentCreate, artifact: ModelArtifact, runtime: Runtime, meta: dict[str, Any]
) -> DeploymentSpec:
    context = body.context_length or min(int(meta.get("context_length") or _DEFAULT_CONTEXT), 8192)
    data = {
        "name": body.name,
        "model": artifact.model_dump(),
        "runtime": runtime,
        "replicas": body.replicas.model_dump(),
        "resources": body.resources.model_dump(),
        "autoscaling": body.autoscaling.model_dump(),
        "context_length": context,
        "aliases": body.aliases,
    }
    return parse_data(DeploymentSpec, data)


def _runtime_of(fmt: str) -> Runtime:
    return {"gguf": "llamacpp", "safetensors": "vllm", "remote": "remote"}.get(fmt, "llamacpp")  # type: ignore[return-value]


def _with_start(bounds: ReplicaBounds, desired: int) -> ReplicaBounds:
    start = min(max(desired, bounds.min), bounds.max)
    return bounds.model_copy(update={"initial": start})
