"""What the engine records about runs, and the store it records them in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class RunStatus(StrEnum):
    """Where a run is. Terminal: succeeded, failed, cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # for a human approval
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the run has ended."""
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class NodeStatus(StrEnum):
    """Where one block of a run is."""

    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class VersionRef:
    """A saved, immutable workflow version."""

    workflow_id: str
    workflow_name: str
    version_id: str
    version: int
    definition: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run about to start."""

    id: str
    version: VersionRef
    inputs: dict[str, Any]
    key_id: str
    trigger: str = "api"
    parent_run_id: str | None = None
    parent_node_id: str | None = None
    status: RunStatus = RunStatus.PENDING


@dataclass(slots=True)
class NodeRecord:
    """One block's execution in a run, as the history shows it."""

    run_id: str
    node_id: str
    block_type: str
    status: NodeStatus
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    handles: list[str] = field(default_factory=list)

    @property
    def duration_ms(self) -> float | None:
        """Wall time of the block, once it has ended."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the API and the event stream."""
        return {
            "node_id": self.node_id,
            "block_type": self.block_type,
            "status": self.status.value,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "error": self.error,
            "attempts": self.attempts,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_ms": self.duration_ms,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "handles": self.handles,
        }


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended."""

    status: RunStatus
    outputs: dict[str, Any]
    error: str | None
    tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as stored."""

    id: str
    workflow_id: str
    workflow_name: str
    version_id: str
    version: int
    status: RunStatus
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    error: str | None
    key_id: str
    trigger: str
    parent_run_id: str | None
    parent_node_id: str | None
    tokens: int
    cost_usd: float
    created_at: datetime
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the API."""
        return {
            "id": self.id,
            "object": "workflow.run",
            "workflow_id": self.workflow_id,
            "workflow": self.workflow_name,
            "version_id": self.version_id,
            "version": self.version,
            "status": self.status.value,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "error": self.error,
            "trigger": self.trigger,
            "parent_run_id": self.parent_run_id,
            "parent_node_id": self.parent_node_id,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class RunStore(Protocol):
    """Where runs and their block histories live (the relational store)."""

    async def version(self, version_id: str) -> VersionRef:
        """A saved version by id (NotFoundError when absent)."""
        ...

    async def resolve(self, workflow: str, version: int | None) -> VersionRef:
        """A workflow's version by number, or its published version (NotFoundError)."""
        ...

    async def create_run(self, run: NewRun) -> bool:
        """Insert a run in ``pending``; False (and no change) when it already exists."""
        ...

    async def set_status(self, run_id: str, status: RunStatus) -> None:
        """Move a run that has not ended to ``status``."""
        ...

    async def finish_run(
        self, run_id: str, outcome: RunOutcome, nodes: list[NodeRecord] | None = None
    ) -> bool:
        """End a run unless it has already ended (False when it had), and save ``nodes``
        in the same transaction."""
        ...

    async def save_nodes(self, records: list[NodeRecord]) -> None:
        """Insert or replace block records, keyed by (run, node)."""
        ...

    async def run(self, run_id: str) -> RunRecord:
        """A run by id (NotFoundError when absent)."""
        ...

    async def nodes(self, run_id: str) -> list[NodeRecord]:
        """Every block record of a run, in start order."""
        ...

    async def children(self, run_id: str) -> list[RunRecord]:
        """The child runs (sub-workflows, map items) a run started."""
        ...
