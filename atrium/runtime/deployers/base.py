"""The ``Deployer`` protocol: where model replicas run, and their status."""

from __future__ import annotations

import builtins
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, Field

from atrium.core.errors import AtriumError
from atrium.runtime.deployments import Allocation, DeploymentSpec


class DeploymentFailedError(AtriumError):
    """Replicas did not come up (the message carries the end of their log)."""

    status = 502
    default_code = "deployment_failed"


class ReplicaState(StrEnum):
    """Where a replica is in its life."""

    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    DRAINING = "draining"
    STOPPED = "stopped"


class ReplicaStatus(BaseModel):
    """One replica, as last seen."""

    index: int
    state: ReplicaState
    base_url: str | None = None
    pid: int | None = None
    restarts: int = Field(0, description="Times it was started again after exiting.")
    last_exit_code: int | None = None
    in_flight: int = Field(0, description="Requests the gateway has outstanding on it.")


class Deployment(BaseModel):
    """A deployment's handle: its spec, where it was placed, and its replicas."""

    name: str
    spec: DeploymentSpec
    allocation: Allocation
    desired: int = Field(description="Replicas asked for (draining ones not counted).")
    replicas: list[ReplicaStatus]

    @property
    def ready(self) -> int:
        """Replicas taking traffic."""
        return sum(1 for r in self.replicas if r.state == ReplicaState.READY)

    @property
    def base_urls(self) -> builtins.list[str]:
        """The ready replicas' OpenAI base URLs."""
        return [r.base_url for r in self.replicas if r.state == ReplicaState.READY and r.base_url]


class Deployer(Protocol):
    """Runs deployments' replicas somewhere and keeps them at the asked-for count."""

    def allocate(self, spec: DeploymentSpec) -> Allocation:
        """The pool ``spec`` would be placed on (400 saying why when none can hold it)."""

    async def deploy(self, spec: DeploymentSpec) -> Deployment:
        """Place and start a deployment; returns once its initial replicas are ready."""

    async def scale(self, name: str, replicas: int) -> Deployment:
        """Add replicas (ready before returning) or drain and stop some."""

    async def status(self, name: str) -> Deployment:
        """The deployment as it is now (404 if unknown)."""

    async def stop(self, name: str, drain_seconds: float = 30.0) -> None:
        """Take every replica out of routing, let requests finish, then stop them."""

    async def list(self) -> builtins.list[Deployment]:
        """Every deployment."""

    async def close(self) -> None:
        """Stop everything this deployer started."""
