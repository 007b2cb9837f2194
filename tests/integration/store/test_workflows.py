"""The workflow repository on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, update
from sqlalchemy.engine import Connection

from atrium.core.errors import ConflictError, InvalidRequestError, NotFoundError
from atrium.store import Database
from atrium.store.db import alembic_config
from atrium.store.tables import WorkflowRow
from atrium.store.workflows import WorkflowRepository
from atrium.workflows.records import (
    NewRun,
    NodeRecord,
    NodeStatus,
    RunOutcome,
    RunStatus,
    VersionRef,
)

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 1, tzinfo=UTC)
WORKFLOW_TABLES = {
    "workflows",
    "workflow_versions",
    "workflow_runs",
    "workflow_node_runs",
    "workflow_workers",
    "workflow_triggers",
}


def _definition(label: str) -> dict[str, Any]:
    return {"nodes": [{"id": "start", "type": "input", "label": label}], "edges": []}


def _new_run(
    version: VersionRef,
    run_id: str,
    *,
    key_id: str = "key_a",
    parent: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> NewRun:
    return NewRun(
        id=run_id,
        version=version,
        inputs=inputs or {"q": run_id},
        key_id=key_id,
        parent_run_id=parent,
        parent_node_id=None if parent is None else "sub",
    )


def _outcome(status: RunStatus, **outputs: Any) -> RunOutcome:
    return RunOutcome(status, outputs, None, tokens=12, cost_usd=0.5)


async def _published(repo: WorkflowRepository, name: str) -> VersionRef:
    await repo.create_workflow(name, f"{name} flow", _definition(name), "key_admin")
    return await repo.publish(name, note="first", created_by="key_admin")


# Workflows and versions ----------------------------------------------------------------


async def test_workflows_are_created_listed_updated_and_names_are_unique(
    database: Database,
) -> None:
    repo = WorkflowRepository(database)
    beta = await repo.create_workflow("beta", "second", _definition("b"), "key_1")
    await repo.create_workflow("alpha", "first", _definition("a"), None)
    assert beta.id.startswith("wf_")
    assert (beta.draft, beta.published_version, beta.created_by) == (
        _definition("b"),
        None,
        "key_1",
    )
    assert [w.name for w in await repo.list_workflows()] == ["alpha", "beta"]
    assert await repo.get_workflow(beta.id) == await repo.get_workflow("beta")
    with pytest.raises(ConflictError):
        await repo.create_workflow("beta", "", {}, None)
    updated = await repo.update_draft("beta", _definition("b2"), None)
    assert (updated.draft, updated.description) == (_definition("b2"), "second")
    described = await repo.update_draft(beta.id, _definition("b3"), "renamed")
    assert (described.draft, described.description) == (_definition("b3"), "renamed")
    with pytest.raises(NotFoundError):
        await repo.get_workflow("gamma")
    with pytest.raises(NotFoundError):
        await repo.update_draft("gamma", {}, None)


async def test_concurrent_creates_of_one_name_leave_one_workflow(database: Database) -> None:
    repo = WorkflowRepository(database)
    results = await asyncio.gather(
        *(repo.create_workflow("same", "", {}, None) for _ in range(4)), return_exceptions=True
    )
    assert sum(isinstance(r, ConflictError) for r in results) == 3
    assert [w.name for w in await repo.list_workflows()] == ["same"]


async def test_publish_numbers_versions_and_resolve_finds_them(database: Database) -> None:
    repo = WorkflowRepository(database)
    workflow = await repo.create_workflow("triage", "", _definition("v1"), "key_1")
    with pytest.raises(NotFoundError, match="no published version; publish it first"):
        await repo.resolve("triage", None)
    first = await repo.publish("triage", note="initial", created_by="key_1")
    assert (first.workflow_id, first.workflow_name, first.version) == (workflow.id, "triage", 1)
    assert first.version_id.startswith("wfv_")
    await repo.update_draft("triage", _definition("v2"), None)
    second = await repo.publish(workflow.id, note="", created_by=None)
    assert second.version == 2
    assert (await repo.get_workflow("triage")).published_version == 2
    assert (await repo.resolve("triage", None)).definition == _definition("v2")
    assert await repo.resolve(workflow.id, 1) == first
    assert await repo.version(first.version_id) == first
    assert await repo.version_by_number("triage", 2) == second
    history = await repo.versions("triage")
    assert [(v.version, v.note, v.created_by) for v in history] == [
        (2, "", None),
        (1, "initial", "key_1"),
    ]
    with pytest.raises(NotFoundError, match="no version 3"):
        await repo.resolve("triage", 3)
    with pytest.raises(NotFoundError):
        await repo.resolve("nope", None)
    with pytest.raises(NotFoundError):
        await repo.version("wfv_missing")


async def test_concurrent_publishes_get_distinct_numbers(database: Database) -> None:
    repo = WorkflowRepository(database)
    await repo.create_workflow("busy", "", _definition("x"), None)
    refs = await asyncio.gather(
        *(repo.publish("busy", note=str(i), created_by=None) for i in range(5))
    )
    assert sorted(ref.version for ref in refs) == [1, 2, 3, 4, 5]
    assert len({ref.version_id for ref in refs}) == 5
    assert (await repo.get_workflow("busy")).published_version == 5


async def test_publish_without_a_draft_is_refused(database: Database) -> None:
    repo = WorkflowRepository(database)
    workflow = await repo.create_workflow("empty", "", {}, None)
    async with database.session() as session:
        await session.execute(
            update(WorkflowRow).where(WorkflowRow.id == workflow.id).values(draft=None)
        )
        await session.commit()
    assert (await repo.get_workflow("empty")).draft is None
    with pytest.raises(InvalidRequestError, match="no draft"):
        await repo.publish("empty", note="", created_by=None)
    assert await repo.versions("empty") == []


# Runs ----------------------------------------------------------------------------------


async def test_create_run_is_idempotent_and_an_ended_run_stays_ended(
    database: Database, clock: Callable[[], datetime]
) -> None:
    repo = WorkflowRepository(database, clock=clock)
    version = await _published(repo, "flow")
    assert await repo.create_run(_new_run(version, "run_1"))
    assert not await repo.create_run(_new_run(version, "run_1", inputs={"q": "other"}))
    created = await repo.run("run_1")
    assert (created.status, created.inputs, created.outputs) == (
        RunStatus.PENDING,
        {"q": "run_1"},
        {},
    )
    assert (created.workflow_name, created.version, created.version_id) == (
        "flow",
        1,
        version.version_id,
    )
    assert created.created_at.tzinfo is not None
    assert created.finished_at is None
    racing = await asyncio.gather(*(repo.create_run(_new_run(version, "run_2")) for _ in range(5)))
    assert sorted(racing) == [False] * 4 + [True]

    await repo.set_status("run_1", RunStatus.RUNNING)
    assert (await repo.run("run_1")).status == RunStatus.RUNNING
    assert await repo.finish_run("run_1", _outcome(RunStatus.SUCCEEDED, answer=42))
    assert not await repo.finish_run("run_1", _outcome(RunStatus.FAILED))
    await repo.set_status("run_1", RunStatus.RUNNING)
    finished = await repo.run("run_1")
    assert (finished.status, finished.outputs, finished.tokens, finished.cost_usd) == (
        RunStatus.SUCCEEDED,
        {"answer": 42},
        12,
        0.5,
    )
    assert finished.finished_at is not None
    assert finished.finished_at > finished.created_at
    with pytest.raises(NotFoundError):
        await repo.run("run_missing")
    assert not await repo.finish_run("run_missing", _outcome(RunStatus.FAILED))


async def test_save_nodes_upserts_and_nodes_come_in_start_order(database: Database) -> None:
    repo = WorkflowRepository(database)
    version = await _published(repo, "flow")
    await repo.create_run(_new_run(version, "run_1"))

    def node(node_id: str, status: NodeStatus, started: int | None, **extra: Any) -> NodeRecord:
        at = None if started is None else T0 + timedelta(seconds=started)
        return NodeRecord("run_1", node_id, "llm", status, started_at=at, **extra)

    await repo.save_nodes(
        [
            node("b", NodeStatus.RUNNING, 2),
            node("a", NodeStatus.RUNNING, 1),
            node("z", NodeStatus.SKIPPED, None),
        ]
    )
    settled = node(
        "b",
        NodeStatus.SUCCEEDED,
        2,
        inputs={"prompt": "hi"},
        outputs={"text": "hello"},
        attempts=2,
        finished_at=T0 + timedelta(seconds=3),
        tokens=7,
        cost_usd=0.25,
        handles=["out"],
    )
    # One batch may carry a node twice; the later record is the one kept.
    await repo.save_nodes(
        [
            node("y", NodeStatus.RUNNING, None),
            settled,
            node("y", NodeStatus.FAILED, None, error="boom"),
        ]
    )
    await repo.save_nodes([])
    nodes = await repo.nodes("run_1")
    assert [(n.node_id, n.status) for n in nodes] == [
        ("a", NodeStatus.RUNNING),
        ("b", NodeStatus.SUCCEEDED),
        ("y", NodeStatus.FAILED),
        ("z", NodeStatus.SKIPPED),
    ]
    assert nodes[1] == settled
    assert nodes[1].duration_ms == 1000
    assert nodes[2].error == "boom"
    assert await repo.nodes("run_other") == []


async def test_list_runs_filters_and_pages_newest_first(
    database: Database, clock: Callable[[], datetime]
) -> None:
    repo = WorkflowRepository(database, clock=clock)
    one = await _published(repo, "one")
    two = await _published(repo, "two")
    for index in range(5):
        await repo.create_run(_new_run(one, f"run_one_{index}", key_id=f"key_{index % 2}"))
    await repo.create_run(_new_run(two, "run_two_0"))
    await repo.create_run(_new_run(one, "run_one_0.sub.1", parent="run_one_0"))
    await repo.finish_run("run_one_3", _outcome(RunStatus.FAILED))

    async def ids(**filters: Any) -> list[str]:
        return [run.id for run in await repo.list_runs(**filters)]

    assert await ids() == ["run_two_0"] + [f"run_one_{i}" for i in (4, 3, 2, 1, 0)]
    assert await ids(workflow="one", limit=2) == ["run_one_4", "run_one_3"]
    assert await ids(workflow=two.workflow_id) == ["run_two_0"]
    assert await ids(workflow="one", before="run_one_3", limit=2) == ["run_one_2", "run_one_1"]
    assert await ids(workflow="one", before="run_one_0") == []
    assert await ids(status="failed") == ["run_one_3"]
    assert await ids(workflow="one", key_id="key_1") == ["run_one_3", "run_one_1"]
    assert (await ids(include_children=True))[0] == "run_one_0.sub.1"
    child = await repo.run("run_one_0.sub.1")
    assert (child.parent_run_id, child.parent_node_id) == ("run_one_0", "sub")
    with pytest.raises(InvalidRequestError):
        await repo.list_runs(status="lost")
    with pytest.raises(InvalidRequestError):
        await repo.list_runs(before="run_missing")
    with pytest.raises(NotFoundError):
        await repo.list_runs(workflow="three")


async def test_runs_created_in_the_same_instant_page_by_id(database: Database) -> None:
    repo = WorkflowRepository(database, clock=lambda: T0)
    version = await _published(repo, "flow")
    for run_id in ("run_b", "run_a", "run_c"):
        await repo.create_run(_new_run(version, run_id))
    assert [r.id for r in await repo.list_runs()] == ["run_c", "run_b", "run_a"]
    assert [r.id for r in await repo.list_runs(before="run_b")] == ["run_a"]


# Workers -------------------------------------------------------------------------------


async def test_exactly_one_claimer_takes_over_a_silent_worker(
    database: Database, clock: Callable[[], datetime]
) -> None:
    repo = WorkflowRepository(database, clock=clock)
    await repo.heartbeat("exec_a", "worker")
    await repo.heartbeat("exec_b", "api")
    assert await repo.stale_workers(timedelta(hours=1)) == []
    assert not await repo.claim_worker("exec_a", "exec_x", timedelta(hours=1))
    assert await repo.stale_workers(timedelta(0)) == ["exec_a", "exec_b"]
    results = await asyncio.gather(
        *(repo.claim_worker("exec_a", f"exec_{i}", timedelta(0)) for i in range(5))
    )
    assert sorted(results) == [False] * 4 + [True]
    assert await repo.stale_workers(timedelta(0)) == ["exec_b"]
    await repo.heartbeat("exec_a", "worker")
    workers = {w.executor_id: w for w in await repo.workers()}
    taken = workers["exec_a"]
    assert taken.taken_over_by == f"exec_{results.index(True)}"
    assert taken.taken_over_at is not None
    assert taken.heartbeat_at > taken.started_at
    assert workers["exec_b"].taken_over_by is None
    await repo.forget_worker("exec_a")
    assert [w.executor_id for w in await repo.workers()] == ["exec_b"]


# Triggers ------------------------------------------------------------------------------


async def test_a_due_schedule_fires_once_across_replicas(database: Database) -> None:
    repo = WorkflowRepository(database)
    await repo.create_workflow("nightly", "", _definition("n"), None)
    due = await repo.create_trigger("nightly", "schedule", {"cron": "0 2 * * *"}, next_fire_at=T0)
    await repo.create_trigger("nightly", "schedule", {}, next_fire_at=T0 + timedelta(days=1))
    await repo.create_trigger("nightly", "schedule", {}, enabled=False, next_fire_at=T0)
    hook = await repo.create_trigger("nightly", "webhook", {"secret": "s"})
    assert due.id.startswith("wft_")
    now = T0 + timedelta(minutes=1)
    assert [t.id for t in await repo.due_schedules(now)] == [due.id]
    tomorrow = T0 + timedelta(days=1)
    results = await asyncio.gather(
        *(repo.claim_due_schedule(due.id, T0, tomorrow) for _ in range(5))
    )
    assert sorted(results) == [False] * 4 + [True]
    assert await repo.due_schedules(now) == []
    fired = await repo.get_trigger(due.id)
    assert (fired.next_fire_at, fired.config) == (tomorrow, {"cron": "0 2 * * *"})
    assert fired.last_fired_at is not None
    assert len(await repo.list_triggers("nightly", "schedule")) == 3
    assert await repo.list_triggers(kind="webhook") == [hook]
    await repo.delete_trigger(hook.id)
    with pytest.raises(NotFoundError):
        await repo.get_trigger(hook.id)
    with pytest.raises(NotFoundError):
        await repo.delete_trigger(hook.id)
    with pytest.raises(InvalidRequestError):
        await repo.create_trigger("nightly", "cron", {})
    with pytest.raises(NotFoundError):
        await repo.create_trigger("daily", "webhook", {})


# Deleting ------------------------------------------------------------------------------


async def test_delete_workflow_waits_for_runs_then_removes_everything(
    database: Database,
) -> None:
    repo = WorkflowRepository(database)
    version = await _published(repo, "doomed")
    kept = await _published(repo, "kept")
    trigger = await repo.create_trigger("doomed", "webhook", {})
    await repo.create_run(_new_run(version, "run_doomed"))
    await repo.create_run(_new_run(kept, "run_kept"))
    for run_id in ("run_doomed", "run_kept"):
        await repo.save_nodes([NodeRecord(run_id, "a", "llm", NodeStatus.RUNNING)])
    await repo.set_status("run_doomed", RunStatus.RUNNING)
    with pytest.raises(ConflictError, match="in progress"):
        await repo.delete_workflow("doomed")
    assert (await repo.get_workflow("doomed")).published_version == 1
    await repo.finish_run("run_doomed", _outcome(RunStatus.CANCELLED))
    await repo.delete_workflow("doomed")
    with pytest.raises(NotFoundError):
        await repo.get_workflow("doomed")
    with pytest.raises(NotFoundError):
        await repo.run("run_doomed")
    with pytest.raises(NotFoundError):
        await repo.version(version.version_id)
    with pytest.raises(NotFoundError):
        await repo.get_trigger(trigger.id)
    assert await repo.nodes("run_doomed") == []
    assert [n.node_id for n in await repo.nodes("run_kept")] == ["a"]
    assert (await repo.run("run_kept")).workflow_name == "kept"
    with pytest.raises(NotFoundError):
        await repo.delete_workflow("doomed")


# Migration -----------------------------------------------------------------------------


async def test_migration_0009_drops_and_restores_the_workflow_tables(database: Database) -> None:
    assert await _table_names(database) >= WORKFLOW_TABLES

    def downgrade(sync: Connection) -> None:
        command.downgrade(alembic_config(sync), "0008")

    async with database.engine.begin() as conn:
        await conn.run_sync(downgrade)
    assert not WORKFLOW_TABLES & await _table_names(database)
    await database.migrate()
    assert await _table_names(database) >= WORKFLOW_TABLES


async def _table_names(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
