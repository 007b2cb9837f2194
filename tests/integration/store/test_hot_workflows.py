"""Workflow run state read through Redis by two replicas on one database.

Each replica has its own repository and hot-state client; they share the store and
Redis (127.0.0.1:6379, under a prefix of this test's own).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from sqlalchemy import update

from atrium.core.errors import NotFoundError
from atrium.store import Database
from atrium.store.hot import InProcessHotState, RedisHotState
from atrium.store.hot_workflows import HotWorkflowRepository
from atrium.store.tables import WorkflowRunRow
from atrium.store.workflows import WorkflowRepository
from atrium.workflows.records import NewRun, NodeRecord, NodeStatus, RunOutcome, RunStatus

pytestmark = pytest.mark.integration


async def test_run_state_written_on_one_replica_is_read_fresh_on_the_other(
    database: Database, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    client, prefix = shared_redis
    worker = HotWorkflowRepository(database, RedisHotState(client, prefix=prefix), ttl_seconds=60)
    api = HotWorkflowRepository(database, RedisHotState(client, prefix=prefix), ttl_seconds=60)
    await worker.create_workflow("flow", "a flow", {"nodes": [], "edges": []}, "key_admin")
    version = await worker.publish("flow", note="first", created_by="key_admin")
    await worker.create_run(NewRun(id="run_1", version=version, inputs={"q": 1}, key_id="key_a"))

    assert (await api.run("run_1")).status is RunStatus.PENDING  # now a copy in Redis
    await worker.set_status("run_1", RunStatus.RUNNING)
    assert (await api.run("run_1")).status is RunStatus.RUNNING
    assert await api.nodes("run_1") == []
    started = datetime.now(UTC)
    node = NodeRecord("run_1", "llm", "llm", NodeStatus.RUNNING, inputs={"p": "x"},
                      attempts=1, started_at=started)  # fmt: skip
    await worker.save_nodes([node])
    [seen] = await api.nodes("run_1")
    assert (seen.node_id, seen.status, seen.started_at) == ("llm", NodeStatus.RUNNING, started)

    node.status, node.outputs, node.finished_at = NodeStatus.SUCCEEDED, {"text": "hi"}, started
    outcome = RunOutcome(RunStatus.SUCCEEDED, {"answer": "hi"}, None, tokens=7, cost_usd=0.25)
    assert await worker.finish_run("run_1", outcome, [node])
    ended = await api.run("run_1")
    assert (ended.status, ended.outputs, ended.tokens) == (RunStatus.SUCCEEDED, {"answer": "hi"}, 7)
    assert ended == await WorkflowRepository(database).run("run_1")  # the copy is exact
    [done] = await api.nodes("run_1")
    assert done.outputs == {"text": "hi"}

    # An ended run is served from the shared copy: changed behind the cache's back, the
    # worker replica (which never read it itself) still answers with the copy.
    async with database.session() as session:
        await session.execute(
            update(WorkflowRunRow).where(WorkflowRunRow.id == "run_1").values(tokens=99)
        )
        await session.commit()
    assert (await worker.run("run_1")).tokens == 7

    await api.delete_workflow("flow")
    with pytest.raises(NotFoundError):
        await worker.run("run_1")


class _HeldWrites(InProcessHotState):
    """Hot state whose writes wait until ``release`` is set (a slow reader's put-back)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self.holding.set()
        await self.release.wait()
        await super().set(key, value, ttl_seconds)


async def test_a_history_read_before_the_run_ended_is_not_served_after_it_ended(
    database: Database,
) -> None:
    hot = _HeldWrites()
    repo = HotWorkflowRepository(database, hot, ttl_seconds=60)
    await repo.create_workflow("flow", "a flow", {"nodes": [], "edges": []}, "key_admin")
    version = await repo.publish("flow", note="first", created_by="key_admin")
    await repo.create_run(NewRun(id="run_1", version=version, inputs={}, key_id="key_a"))
    await repo.set_status("run_1", RunStatus.RUNNING)

    # A reader fetches the (still empty) history, and is slow to put its copy back ...
    reader = asyncio.create_task(repo.nodes("run_1"))
    await hot.holding.wait()
    # ... while the run's last records and its end commit (and drop the copies).
    started = datetime.now(UTC)
    node = NodeRecord("run_1", "t", "transform", NodeStatus.SUCCEEDED, outputs={"x": 1},
                      attempts=1, started_at=started, finished_at=started)  # fmt: skip
    outcome = RunOutcome(RunStatus.SUCCEEDED, {"x": 1}, None, tokens=0, cost_usd=0.0)
    assert await repo.finish_run("run_1", outcome, [node])
    hot.release.set()
    assert await reader == []

    # The stale copy is back in hot state; whoever sees the run ended gets the whole history.
    assert (await repo.run("run_1")).status is RunStatus.SUCCEEDED
    [seen] = await repo.nodes("run_1")
    assert (seen.node_id, seen.outputs) == ("t", {"x": 1})
