"""Releases, persisted deployments and A/B experiments."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from atrium.core.errors import ConflictError, NotFoundError
from atrium.store.db import Database
from atrium.store.tables import DeploymentRow, ExperimentRow, ReleaseRow


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """A release and where it is in the pipeline."""

    id: str
    model: str
    version: int | None
    source: str
    release_ref: str
    uri: str
    status: str
    stage: str
    reason: str | None
    weight: float
    policy: dict[str, Any]
    timeline: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _release(row: ReleaseRow) -> ReleaseRecord:
    return ReleaseRecord(
        row.id, row.model, row.version, row.source, row.release_ref, row.uri, row.status,
        row.stage, row.reason, row.weight, dict(row.policy), list(row.timeline),
        row.created_at, row.updated_at, row.finished_at,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReleaseChange:
    """What a pipeline step changes on a release (None: unchanged)."""

    stage: str | None = None
    status: str | None = None
    version: int | None = None
    weight: float | None = None
    reason: str | None = None
    finished: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


class ReleaseRepository:
    """Releases, each with a timeline of its stages."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, *, model: str, source: str, release_ref: str, uri: str, policy: dict[str, Any]
    ) -> ReleaseRecord:
        """A new release in the ``detected`` stage."""
        now = _now()
        row = ReleaseRow(
            id=f"rel_{uuid.uuid4().hex[:20]}",
            model=model,
            version=None,
            source=source,
            release_ref=release_ref,
            uri=uri,
            status="running",
            stage="detected",
            reason=None,
            weight=0.0,
            policy=policy,
            timeline=[{"stage": "detected", "status": "running", "at": now.isoformat()}],
            created_at=now,
            updated_at=now,
            finished_at=None,
        )
        async with self._db.session() as session:
            session.add(row)
            await session.commit()
            return _release(row)

    async def get(self, release_id: str) -> ReleaseRecord:
        """A release, or 404."""
        async with self._db.session() as session:
            row = await session.get(ReleaseRow, release_id)
            if row is None:
                raise NotFoundError(f"there is no release {release_id!r}", param="release")
            return _release(row)

    async def list(self, model: str | None = None, limit: int = 100) -> list[ReleaseRecord]:
        """Releases, newest first."""
        query = select(ReleaseRow).order_by(ReleaseRow.created_at.desc()).limit(limit)
        if model is not None:
            query = query.where(ReleaseRow.model == model)
        async with self._db.session() as session:
            return [_release(r) for r in await session.scalars(query)]

    async def update(self, release_id: str, change: ReleaseChange) -> ReleaseRecord:
        """Apply a change; a new stage or status is appended to the timeline."""
        async with self._db.session() as session:
            row = await session.get(ReleaseRow, release_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"there is no release {release_id!r}", param="release")
            now = _now()
            moved = (change.stage is not None and change.stage != row.stage) or (
                change.status is not None and change.status != row.status
            )
            for name in ("stage", "status", "version", "weight", "reason"):
                value = getattr(change, name)
                if value is not None:
                    setattr(row, name, value)
            if moved or change.detail:
                entry: dict[str, Any] = {"stage": row.stage, "status": row.status}
                entry["at"] = now.isoformat()
                entry.update(change.detail)
                row.timeline = [*row.timeline, entry]
            row.updated_at = now
            if change.finished:
                row.finished_at = now
            await session.commit()
            return _release(row)


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """A persisted deployment."""

    name: str
    spec: dict[str, Any]
    desired: int
    created_at: datetime
    updated_at: datetime


class DeploymentRepository:
    """Deployment specs and desired replica counts, brought back at start."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, name: str, spec: dict[str, Any], desired: int) -> None:
        """Create or replace a deployment."""
        async with self._db.session() as session:
            row = await session.get(DeploymentRow, name)
            now = _now()
            if row is None:
                session.add(
                    DeploymentRow(
                        name=name, spec=spec, desired=desired, created_at=now, updated_at=now
                    )
                )
            else:
                row.spec, row.desired, row.updated_at = spec, desired, now
            await session.commit()

    async def set_desired(self, name: str, desired: int) -> None:
        """Record a new replica count (the autoscaler's or an operator's)."""
        async with self._db.session() as session:
            row = await session.get(DeploymentRow, name)
            if row is not None:
                row.desired, row.updated_at = desired, _now()
                await session.commit()

    async def delete(self, name: str) -> bool:
        """Forget a deployment; False when there was none."""
        async with self._db.session() as session:
            result = await session.execute(delete(DeploymentRow).where(DeploymentRow.name == name))
            await session.commit()
        return bool(getattr(result, "rowcount", 0))

    async def all(self) -> list[DeploymentRecord]:
        """Every deployment, oldest first."""
        async with self._db.session() as session:
            rows = await session.scalars(select(DeploymentRow).order_by(DeploymentRow.created_at))
            return [
                DeploymentRecord(r.name, dict(r.spec), r.desired, r.created_at, r.updated_at)
                for r in rows
            ]


@dataclass(frozen=True, slots=True)
class ExperimentRecord:
    """An A/B experiment."""

    id: str
    name: str
    spec: dict[str, Any]
    status: str
    verdict: dict[str, Any] | None
    started_at: datetime
    ended_at: datetime | None


def _experiment(row: ExperimentRow) -> ExperimentRecord:
    verdict = dict(row.verdict) if row.verdict is not None else None
    return ExperimentRecord(
        row.id, row.name, dict(row.spec), row.status, verdict, row.started_at, row.ended_at
    )


class ExperimentRepository:
    """A/B experiments and their verdicts."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, spec: dict[str, Any]) -> ExperimentRecord:
        """Start an experiment (409 if the name is taken)."""
        async with self._db.session() as session:
            taken = await session.scalar(select(ExperimentRow.id).where(ExperimentRow.name == name))
            if taken is not None:
                raise ConflictError(f"the experiment {name!r} exists", param="name")
            row = ExperimentRow(
                id=f"exp_{uuid.uuid4().hex[:20]}",
                name=name,
                spec=spec,
                status="running",
                verdict=None,
                started_at=_now(),
                ended_at=None,
            )
            session.add(row)
            await session.commit()
            return _experiment(row)

    async def get(self, name: str) -> ExperimentRecord:
        """An experiment by name, or 404."""
        async with self._db.session() as session:
            row = await session.scalar(select(ExperimentRow).where(ExperimentRow.name == name))
            if row is None:
                raise NotFoundError(f"there is no experiment {name!r}", param="name")
            return _experiment(row)

    async def list(self) -> list[ExperimentRecord]:
        """Every experiment, newest first."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(ExperimentRow).order_by(ExperimentRow.started_at.desc())
            )
            return [_experiment(r) for r in rows]

    async def finish(self, name: str, status: str, verdict: dict[str, Any]) -> ExperimentRecord:
        """Stop an experiment with its verdict."""
        async with self._db.session() as session:
            row = await session.scalar(select(ExperimentRow).where(ExperimentRow.name == name))
            if row is None:
                raise NotFoundError(f"there is no experiment {name!r}", param="name")
            row.status, row.verdict, row.ended_at = status, verdict, _now()
            await session.commit()
            return _experiment(row)
