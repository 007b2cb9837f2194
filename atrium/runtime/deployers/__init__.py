"""Deployers: where a deployment's model replicas run (local processes, Kubernetes)."""

from atrium.runtime.deployers.base import (
    Deployer,
    Deployment,
    DeploymentFailedError,
    ReplicaState,
    ReplicaStatus,
)
from atrium.runtime.deployers.local import LocalDeployer, LocalDeployerOptions, replica_command

__all__ = [
    "Deployer",
    "Deployment",
    "DeploymentFailedError",
    "LocalDeployer",
    "LocalDeployerOptions",
    "ReplicaState",
    "ReplicaStatus",
    "replica_command",
]
