"""Workflows, their published versions, runs and block runs, workers and triggers.

:class:`WorkflowRepository` is the engine's :class:`~atrium.workflows.records.RunStore`
and the API's store for workflow definitions. Every claim (a stale worker's runs, a
schedule's tick) is one conditional UPDATE, so of several replicas exactly one wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Final

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement, Select

from atrium.core.errors import ConflictError, InvalidRequestError, NotFoundError
from atrium.store.db import Database
from atrium.store.knowledge import new_id
from atrium.store.tables import (
    Base,
    WorkflowNodeRunRow,
    WorkflowRow,
    WorkflowRunRow,
    WorkflowTriggerRow,
    WorkflowVersionRow,
    WorkflowWorkerRow,
)
from atrium.workflows.records import (
    NewRun,
    NodeRecord,
    NodeStatus,
    RunOutcome,
    RunRecord,
    RunStatus,
    VersionRef,
)

TRIGGER_KINDS: Final = frozenset({"schedule", "webhook", "event"})
_TERMINAL: Final = tuple(status.value for status in RunStatus if status.terminal)
_ACTIVE: Final = tuple(status.value for status in RunStatus if not status.terminal)
# Publishes of one workflow queue on its row lock; a retry only covers what slips past.
_PUBLISH_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A workflow as stored: its editable draft and its latest published version number."""

    id: str
    name: str
    description: str
    draft: dict[str, Any] | None
    draft_updated_at: datetime | None
    published_version: int | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A published version in a workflow's history (without its definition)."""

    id: str
    version: int
    note: str
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """A schedule, webhook or event trigger of a workflow."""

    id: str
    workflow_id: str
    kind: str
    config: dict[str, Any]
    enabled: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A process that executes runs, and who took its runs over once it went silent."""

    executor_id: str
    role: str
    started_at: datetime
    heartbeat_at: datetime
    taken_over_by: str | None
    taken_over_at: datetime | None


class WorkflowRepository:
    """Persistence for workflows and their runs; implements the engine's ``RunStore``."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    # Workflows -------------------------------------------------------------------------

    async def create_workflow(
        self, name: str, description: str, definition: dict[str, Any], created_by: str | None
    ) -> WorkflowRecord:
        """Create a workflow whose draft is ``definition``; a taken name is a 409."""
        now = self._clock()
        row = WorkflowRow(
            id=new_id("wf"),
            name=name,
            description=description,
            draft=definition,
            draft_updated_at=now,
            published_version=None,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        await self._db.insert(row, ConflictError(f"a workflow named {name!r} exists", param="name"))
        return _workflow(row)

    async def get_workflow(self, id_or_name: str) -> WorkflowRecord:
        """The workflow with this id or name; 404 if there is none."""
        async with self._db.session() as session:
            return _workflow(await _get_workflow(session, id_or_name))

    async def list_workflows(self) -> list[WorkflowRecord]:
        """Every workflow, by name."""
        async with self._db.session() as session:
            rows = await session.scalars(select(WorkflowRow).order_by(WorkflowRow.name))
            return [_workflow(row) for row in rows]

    async def update_draft(
        self, id_or_name: str, definition: dict[str, Any], description: str | None = None
    ) -> WorkflowRecord:
        """Replace a workflow's draft (and its description, when given)."""
        now = self._clock()
        async with self._db.session() as session:
            row = await _get_workflow(session, id_or_name)
            row.draft, row.draft_updated_at, row.updated_at = definition, now, now
            if description is not None:
                row.description = description
            await session.commit()
            return _workflow(row)

    async def delete_workflow(self, id_or_name: str) -> None:
        """Delete a workflow with its versions, triggers, runs and block runs.

        A 409 while any of its runs is pending, running or waiting: cancel those first.
        """
        async with self._db.session() as session:
            row = await _get_workflow(session, id_or_name)
            active = await session.scalar(
                select(WorkflowRunRow.id)
                .where(WorkflowRunRow.workflow_id == row.id, WorkflowRunRow.status.in_(_ACTIVE))
                .limit(1)
            )
            if active is not None:
                msg = f"workflow {row.name!r} has a run in progress ({active}); cancel it first"
                raise ConflictError(msg)
            runs = select(WorkflowRunRow.id).where(WorkflowRunRow.workflow_id == row.id)
            await session.execute(
                delete(WorkflowNodeRunRow).where(WorkflowNodeRunRow.run_id.in_(runs)),
                execution_options={"synchronize_session": False},
            )
            for table in (WorkflowRunRow, WorkflowVersionRow, WorkflowTriggerRow):
                await session.execute(delete(table).where(table.workflow_id == row.id))
            await session.delete(row)
            await session.commit()

    # Versions --------------------------------------------------------------------------

    async def publish(
        self, id_or_name: str, *, note: str = "", created_by: str | None = None
    ) -> VersionRef:
        """Save the current draft as the next version and make it the published one."""
        for _ in range(_PUBLISH_ATTEMPTS):
            try:
                return await self._publish_once(id_or_name, note, created_by)
            except IntegrityError:
                continue
        msg = f"concurrent publishes of workflow {id_or_name!r} kept clashing; try again"
        raise ConflictError(msg)

    async def _publish_once(self, id_or_name: str, note: str, created_by: str | None) -> VersionRef:
        now = self._clock()
        async with self._db.session() as session:
            row = await _get_workflow(session, id_or_name)
            # Writing the row first takes its lock (a row lock on PostgreSQL, the write
            # lock on SQLite): concurrent publishes queue here and read the number after.
            await session.execute(
                update(WorkflowRow).where(WorkflowRow.id == row.id).values(updated_at=now)
            )
            await session.refresh(row)
            if row.draft is None:
                msg = f"workflow {row.name!r} has no draft to publish"
                raise InvalidRequestError(msg)
            latest = await session.scalar(
                select(func.max(WorkflowVersionRow.version)).where(
                    WorkflowVersionRow.workflow_id == row.id
                )
            )
            version = WorkflowVersionRow(
                id=new_id("wfv"),
                workflow_id=row.id,
                version=(latest or 0) + 1,
                definition=row.draft,
                note=note,
                created_by=created_by,
                created_at=now,
            )
            session.add(version)
            row.published_version = version.version
            await session.commit()
            return _version_ref(version, row.name)

    async def versions(self, id_or_name: str) -> list[VersionInfo]:
        """A workflow's published versions, newest first."""
        async with self._db.session() as session:
            workflow = await _get_workflow(session, id_or_name)
            rows = await session.scalars(
                select(WorkflowVersionRow)
                .where(WorkflowVersionRow.workflow_id == workflow.id)
                .order_by(WorkflowVersionRow.version.desc())
            )
            return [
                VersionInfo(row.id, row.version, row.note, row.created_by, row.created_at)
                for row in rows
            ]

    async def version_by_number(self, id_or_name: str, number: int) -> VersionRef:
        """Version ``number`` of a workflow (404 when it has none)."""
        async with self._db.session() as session:
            workflow = await _get_workflow(session, id_or_name)
            return await _numbered_version(session, workflow, number)

    # RunStore: versions ----------------------------------------------------------------

    async def version(self, version_id: str) -> VersionRef:
        """A saved version by id (NotFoundError when absent)."""
        async with self._db.session() as session:
            found = (
                await session.execute(
                    select(WorkflowVersionRow, WorkflowRow.name)
                    .join(WorkflowRow, WorkflowRow.id == WorkflowVersionRow.workflow_id)
                    .where(WorkflowVersionRow.id == version_id)
                )
            ).first()
        if found is None:
            raise NotFoundError(f"no workflow version {version_id!r}")
        return _version_ref(found[0], found[1])

    async def resolve(self, workflow: str, version: int | None) -> VersionRef:
        """A workflow's version by number, or its published version (NotFoundError)."""
        async with self._db.session() as session:
            row = await _get_workflow(session, workflow)
            if version is None:
                if row.published_version is None:
                    msg = f"workflow {row.name!r} has no published version; publish it first"
                    raise NotFoundError(msg)
                version = row.published_version
            return await _numbered_version(session, row, version)

    # RunStore: runs --------------------------------------------------------------------

    async def create_run(self, run: NewRun) -> bool:
        """Insert a run (in ``run.status``); False (and no change) when it already exists."""
        values = {
            "id": run.id,
            "workflow_id": run.version.workflow_id,
            "version_id": run.version.version_id,
            "version": run.version.version,
            "status": run.status.value,
            "inputs": run.inputs,
            "outputs": {},
            "error": None,
            "key_id": run.key_id,
            "trigger": run.trigger,
            "parent_run_id": run.parent_run_id,
            "parent_node_id": run.parent_node_id,
            "tokens": 0,
            "cost_usd": 0.0,
            "created_at": self._clock(),
            "finished_at": None,
        }
        # ON CONFLICT DO NOTHING: of two racing inserts one writes, neither fails.
        statement = self._insert(_table(WorkflowRunRow)).values(values)
        async with self._db.engine.begin() as conn:
            result = await conn.execute(statement.on_conflict_do_nothing(index_elements=["id"]))
        return bool(result.rowcount)

    async def set_status(self, run_id: str, status: RunStatus) -> None:
        """Move a run that has not ended to ``status``."""
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(WorkflowRunRow)
                .where(WorkflowRunRow.id == run_id, WorkflowRunRow.status.not_in(_TERMINAL))
                .values(status=status.value)
            )

    async def finish_run(
        self, run_id: str, outcome: RunOutcome, nodes: list[NodeRecord] | None = None
    ) -> bool:
        """End a run unless it has already ended (False when it had), and save ``nodes``
        in the same transaction (one commit for the run's last records and its end)."""
        async with self._db.engine.begin() as conn:
            if nodes:
                await conn.execute(_upsert_nodes(self._db.is_sqlite), _latest_rows(nodes))
            result = await conn.execute(
                update(WorkflowRunRow)
                .where(WorkflowRunRow.id == run_id, WorkflowRunRow.status.not_in(_TERMINAL))
                .values(
                    status=outcome.status.value,
                    outputs=outcome.outputs,
                    error=outcome.error,
                    tokens=outcome.tokens,
                    cost_usd=outcome.cost_usd,
                    finished_at=self._clock(),
                )
            )
        return bool(result.rowcount)

    async def run(self, run_id: str) -> RunRecord:
        """A run by id (NotFoundError when absent)."""
        async with self._db.session() as session:
            found = (await session.execute(_runs().where(WorkflowRunRow.id == run_id))).first()
        if found is None:
            raise NotFoundError(f"no workflow run {run_id!r}")
        return _run(found[0], found[1])

    async def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
        *,
        key_id: str | None = None,
        include_children: bool = False,
    ) -> list[RunRecord]:
        """Runs newest first, optionally of one workflow (id or name), status or key.

        ``before`` is a run id: only runs created before it are listed (the next page).
        Child runs of a sub-workflow block are left out unless ``include_children``.
        """
        query = _runs()
        async with self._db.session() as session:
            if workflow is not None:
                row = await _get_workflow(session, workflow)
                query = query.where(WorkflowRunRow.workflow_id == row.id)
            if status is not None:
                query = query.where(WorkflowRunRow.status == _run_status(status).value)
            if key_id is not None:
                query = query.where(WorkflowRunRow.key_id == key_id)
            if not include_children:
                query = query.where(WorkflowRunRow.parent_run_id.is_(None))
            if before is not None:
                query = query.where(await _before(session, before, key_id))
            rows = await session.execute(
                query.order_by(WorkflowRunRow.created_at.desc(), WorkflowRunRow.id.desc()).limit(
                    limit
                )
            )
            return [_run(run, name) for run, name in rows]

    # RunStore: block runs --------------------------------------------------------------

    async def save_nodes(self, records: list[NodeRecord]) -> None:
        """Insert or replace block records, keyed by (run, node): one statement a batch."""
        if not records:
            return
        async with self._db.engine.begin() as conn:
            await conn.execute(_upsert_nodes(self._db.is_sqlite), _latest_rows(records))

    async def children(self, run_id: str) -> list[RunRecord]:
        """The child runs (sub-workflows, map items) a run started, oldest first."""
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    _runs()
                    .where(WorkflowRunRow.parent_run_id == run_id)
                    .order_by(WorkflowRunRow.created_at, WorkflowRunRow.id)
                )
            ).all()
        return [_run(row, name) for row, name in rows]

    async def nodes(self, run_id: str) -> list[NodeRecord]:
        """Every block record of a run, in start order (unstarted last, then by node id)."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(WorkflowNodeRunRow)
                .where(WorkflowNodeRunRow.run_id == run_id)
                .order_by(
                    WorkflowNodeRunRow.started_at.is_(None),
                    WorkflowNodeRunRow.started_at,
                    WorkflowNodeRunRow.node_id,
                )
            )
            return [_node(row) for row in rows]

    # Workers ---------------------------------------------------------------------------

    async def heartbeat(self, executor_id: str, role: str) -> None:
        """Record that a worker is alive (registering it on its first beat)."""
        now = self._clock()
        statement = self._insert(_table(WorkflowWorkerRow)).values(
            executor_id=executor_id, role=role, started_at=now, heartbeat_at=now
        )
        async with self._db.engine.begin() as conn:
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["executor_id"], set_={"role": role, "heartbeat_at": now}
                )
            )

    async def workers(self) -> list[WorkerRecord]:
        """Every known worker, by executor id."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(WorkflowWorkerRow).order_by(WorkflowWorkerRow.executor_id)
            )
            return [_worker(row) for row in rows]

    async def stale_workers(self, older_than: timedelta) -> list[str]:
        """Workers silent for longer than ``older_than`` whose runs nobody took over."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(WorkflowWorkerRow.executor_id)
                .where(
                    WorkflowWorkerRow.taken_over_by.is_(None),
                    WorkflowWorkerRow.heartbeat_at < self._clock() - older_than,
                )
                .order_by(WorkflowWorkerRow.executor_id)
            )
            return list(rows)

    async def claim_worker(self, executor_id: str, by: str, older_than: timedelta) -> bool:
        """Take over a silent worker's runs; of many concurrent claimers exactly one wins."""
        now = self._clock()
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(WorkflowWorkerRow)
                .where(
                    WorkflowWorkerRow.executor_id == executor_id,
                    WorkflowWorkerRow.taken_over_by.is_(None),
                    WorkflowWorkerRow.heartbeat_at < now - older_than,
                )
                .values(taken_over_by=by, taken_over_at=now)
            )
        return bool(result.rowcount)

    async def forget_worker(self, executor_id: str) -> None:
        """Remove a worker's row (it stopped cleanly, or its runs were taken over)."""
        async with self._db.engine.begin() as conn:
            await conn.execute(
                delete(WorkflowWorkerRow).where(WorkflowWorkerRow.executor_id == executor_id)
            )

    # Triggers --------------------------------------------------------------------------

    async def create_trigger(
        self,
        workflow: str,
        kind: str,
        config: dict[str, Any],
        enabled: bool = True,
        next_fire_at: datetime | None = None,
    ) -> TriggerRecord:
        """Add a trigger (``schedule``, ``webhook`` or ``event``) to a workflow."""
        if kind not in TRIGGER_KINDS:
            msg = f"unknown trigger kind {kind!r}; expected one of {sorted(TRIGGER_KINDS)}"
            raise InvalidRequestError(msg, param="kind")
        async with self._db.session() as session:
            owner = await _get_workflow(session, workflow)
            row = WorkflowTriggerRow(
                id=new_id("wft"),
                workflow_id=owner.id,
                kind=kind,
                config=config,
                enabled=enabled,
                next_fire_at=next_fire_at,
                last_fired_at=None,
                created_at=self._clock(),
            )
            session.add(row)
            await session.commit()
            return _trigger(row)

    async def list_triggers(
        self, workflow: str | None = None, kind: str | None = None
    ) -> list[TriggerRecord]:
        """Triggers, optionally of one workflow (id or name) or one kind, oldest first."""
        query = select(WorkflowTriggerRow)
        async with self._db.session() as session:
            if workflow is not None:
                owner = await _get_workflow(session, workflow)
                query = query.where(WorkflowTriggerRow.workflow_id == owner.id)
            if kind is not None:
                query = query.where(WorkflowTriggerRow.kind == kind)
            rows = await session.scalars(
                query.order_by(WorkflowTriggerRow.created_at, WorkflowTriggerRow.id)
            )
            return [_trigger(row) for row in rows]

    async def get_trigger(self, trigger_id: str) -> TriggerRecord:
        """A trigger by id; 404 if there is none."""
        async with self._db.session() as session:
            row = await session.get(WorkflowTriggerRow, trigger_id)
        if row is None:
            raise NotFoundError(f"no workflow trigger {trigger_id!r}")
        return _trigger(row)

    async def delete_trigger(self, trigger_id: str) -> None:
        """Delete a trigger; 404 if there is none."""
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                delete(WorkflowTriggerRow).where(WorkflowTriggerRow.id == trigger_id)
            )
        if not result.rowcount:
            raise NotFoundError(f"no workflow trigger {trigger_id!r}")

    async def due_schedules(self, now: datetime) -> list[TriggerRecord]:
        """Enabled schedule triggers whose next tick is at or before ``now``."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(WorkflowTriggerRow)
                .where(
                    WorkflowTriggerRow.kind == "schedule",
                    WorkflowTriggerRow.enabled.is_(True),
                    WorkflowTriggerRow.next_fire_at <= now,
                )
                .order_by(WorkflowTriggerRow.next_fire_at, WorkflowTriggerRow.id)
            )
            return [_trigger(row) for row in rows]

    async def claim_due_schedule(
        self, trigger_id: str, expected_next: datetime, next_fire_at: datetime
    ) -> bool:
        """Claim a schedule's tick ``expected_next`` and move it on to ``next_fire_at``.

        One conditional UPDATE: of replicas that saw the same tick, exactly one wins.
        """
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(WorkflowTriggerRow)
                .where(
                    WorkflowTriggerRow.id == trigger_id,
                    WorkflowTriggerRow.enabled.is_(True),
                    WorkflowTriggerRow.next_fire_at == expected_next,
                )
                .values(last_fired_at=self._clock(), next_fire_at=next_fire_at)
            )
        return bool(result.rowcount)

    # Helpers ---------------------------------------------------------------------------

    def _insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        return sqlite.insert(table) if self._db.is_sqlite else postgresql.insert(table)


def _latest_rows(records: list[NodeRecord]) -> list[dict[str, Any]]:
    # A batch may hold a node twice (started, then settled); the last one stands.
    latest = {(record.run_id, record.node_id): record for record in records}
    return [_node_values(record) for record in latest.values()]


def _table(row_type: type[Base]) -> Table:
    return Base.metadata.tables[row_type.__tablename__]


@cache
def _upsert_nodes(is_sqlite: bool) -> sqlite.Insert | postgresql.Insert:
    """INSERT ... ON CONFLICT (run_id, node_id) DO UPDATE every other column."""
    table = _table(WorkflowNodeRunRow)
    statement = sqlite.insert(table) if is_sqlite else postgresql.insert(table)
    replaced = {
        column.name: statement.excluded[column.name]
        for column in table.columns
        if not column.primary_key
    }
    return statement.on_conflict_do_update(index_elements=["run_id", "node_id"], set_=replaced)


async def _find_workflow(session: AsyncSession, id_or_name: str) -> WorkflowRow | None:
    row = await session.get(WorkflowRow, id_or_name)
    if row is None:
        row = await session.scalar(select(WorkflowRow).where(WorkflowRow.name == id_or_name))
    return row


async def _get_workflow(session: AsyncSession, id_or_name: str) -> WorkflowRow:
    row = await _find_workflow(session, id_or_name)
    if row is None:
        raise NotFoundError(f"no workflow {id_or_name!r}")
    return row


async def _numbered_version(
    session: AsyncSession, workflow: WorkflowRow, number: int
) -> VersionRef:
    row = await session.scalar(
        select(WorkflowVersionRow).where(
            WorkflowVersionRow.workflow_id == workflow.id, WorkflowVersionRow.version == number
        )
    )
    if row is None:
        raise NotFoundError(f"workflow {workflow.name!r} has no version {number}")
    return _version_ref(row, workflow.name)


def _runs() -> Select[WorkflowRunRow, str]:
    return select(WorkflowRunRow, WorkflowRow.name).join(
        WorkflowRow, WorkflowRow.id == WorkflowRunRow.workflow_id
    )


async def _before(session: AsyncSession, run_id: str, key_id: str | None) -> ColumnElement[bool]:
    """The condition 'created before run ``run_id``' (ties broken by id, as listed); the
    run must be ``key_id``'s when given (another key's run is no cursor of this listing)."""
    where = WorkflowRunRow.id == run_id
    if key_id is not None:
        where = where & (WorkflowRunRow.key_id == key_id)
    cursor = await session.scalar(select(WorkflowRunRow.created_at).where(where))
    if cursor is None:
        raise InvalidRequestError(f"no workflow run {run_id!r} to page from", param="before")
    return or_(
        WorkflowRunRow.created_at < cursor,
        (WorkflowRunRow.created_at == cursor) & (WorkflowRunRow.id < run_id),
    )


def _run_status(status: str) -> RunStatus:
    try:
        return RunStatus(status)
    except ValueError:
        expected = [s.value for s in RunStatus]
        msg = f"unknown run status {status!r}; expected one of {expected}"
        raise InvalidRequestError(msg, param="status") from None


def _workflow(row: WorkflowRow) -> WorkflowRecord:
    return WorkflowRecord(
        id=row.id,
        name=row.name,
        description=row.description,
        draft=None if row.draft is None else dict(row.draft),
        draft_updated_at=row.draft_updated_at,
        published_version=row.published_version,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _version_ref(row: WorkflowVersionRow, workflow_name: str) -> VersionRef:
    return VersionRef(row.workflow_id, workflow_name, row.id, row.version, dict(row.definition))


def _run(row: WorkflowRunRow, workflow_name: str) -> RunRecord:
    return RunRecord(
        id=row.id,
        workflow_id=row.workflow_id,
        workflow_name=workflow_name,
        version_id=row.version_id,
        version=row.version,
        status=RunStatus(row.status),
        inputs=dict(row.inputs),
        outputs=dict(row.outputs),
        error=row.error,
        key_id=row.key_id,
        trigger=row.trigger,
        parent_run_id=row.parent_run_id,
        parent_node_id=row.parent_node_id,
        tokens=row.tokens,
        cost_usd=row.cost_usd,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _node_values(record: NodeRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "node_id": record.node_id,
        "block_type": record.block_type,
        "status": record.status.value,
        "inputs": record.inputs,
        "outputs": record.outputs,
        "error": record.error,
        "attempts": record.attempts,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "tokens": record.tokens,
        "cost_usd": record.cost_usd,
        "handles": record.handles,
    }


def _node(row: WorkflowNodeRunRow) -> NodeRecord:
    return NodeRecord(
        run_id=row.run_id,
        node_id=row.node_id,
        block_type=row.block_type,
        status=NodeStatus(row.status),
        inputs=dict(row.inputs),
        outputs=dict(row.outputs),
        error=row.error,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        tokens=row.tokens,
        cost_usd=row.cost_usd,
        handles=list(row.handles),
    )


def _trigger(row: WorkflowTriggerRow) -> TriggerRecord:
    return TriggerRecord(
        id=row.id,
        workflow_id=row.workflow_id,
        kind=row.kind,
        config=dict(row.config),
        enabled=row.enabled,
        next_fire_at=row.next_fire_at,
        last_fired_at=row.last_fired_at,
        created_at=row.created_at,
    )


def _worker(row: WorkflowWorkerRow) -> WorkerRecord:
    return WorkerRecord(
        executor_id=row.executor_id,
        role=row.role,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        taken_over_by=row.taken_over_by,
        taken_over_at=row.taken_over_at,
    )
