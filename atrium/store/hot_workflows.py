"""Workflow runs read through hot state: the run a user is watching, from any replica.

A run's record and its block history are read over and over while it runs (the run
page's event stream polls them on every replica that is not executing it). This
repository keeps copies of both in :mod:`atrium.store.hot` state (Redis when
configured) and drops them after every write of the run or its blocks. The store
stays the source of truth: every write goes to it first.

A reader that fetched from the store just before a write committed can put back a
copy older than that write; so what can still change (a run that has not ended, a
block history) is kept for ``LIVE_TTL_SECONDS`` at most, and only an ended run's
record, which never changes again, for the full TTL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select

from atrium.store.db import Database
from atrium.store.hot import HotState
from atrium.store.tables import WorkflowRunRow
from atrium.store.workflows import WorkflowRepository
from atrium.workflows.records import (
    NodeRecord,
    NodeStatus,
    RunOutcome,
    RunRecord,
    RunStatus,
)

#: The longest a copy of something that can still change is kept.
LIVE_TTL_SECONDS = 2.0


class HotWorkflowRepository(WorkflowRepository):
    """A :class:`WorkflowRepository` whose run and block reads go through hot state."""

    def __init__(
        self,
        db: Database,
        hot: HotState,
        *,
        ttl_seconds: float,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(db, clock=clock)
        self._hot = hot
        self._ttl = ttl_seconds

    async def run(self, run_id: str) -> RunRecord:
        """A run by id: the hot copy, or the store's (NotFoundError when absent)."""
        cached = await self._hot.get(_run_key(run_id))
        if cached is not None:
            return _run_from(orjson.loads(cached))
        record = await super().run(run_id)
        ttl = self._ttl if record.status.terminal else min(self._ttl, LIVE_TTL_SECONDS)
        await self._hot.set(_run_key(run_id), orjson.dumps(_run_to(record)), ttl)
        return record

    async def nodes(self, run_id: str) -> list[NodeRecord]:
        """A run's block records: the hot copy, or the store's.

        A copy read while the run had not ended is not served once it has: a reader that
        fetched the history just before the run's last records and its end committed
        can put that copy back after the end dropped it, and whoever sees the run ended
        must then see all of its blocks (the run page would otherwise show none).
        """
        cached = await self._hot.get(_nodes_key(run_id))
        if cached is not None:
            body = orjson.loads(cached)
            if body["ended"] or not (await self.run(run_id)).status.terminal:
                return [_node_from(run_id, item) for item in body["nodes"]]
        # The run's state before its history: "ended" then vouches for a complete one.
        ended = (await super().run(run_id)).status.terminal
        records = await super().nodes(run_id)
        body = orjson.dumps({"ended": ended, "nodes": [record.as_dict() for record in records]})
        await self._hot.set(_nodes_key(run_id), body, min(self._ttl, LIVE_TTL_SECONDS))
        return records

    async def set_status(self, run_id: str, status: RunStatus) -> None:
        """Move the run, then drop its copy."""
        try:
            await super().set_status(run_id, status)
        finally:
            await self._hot.delete(_run_key(run_id))

    async def finish_run(
        self, run_id: str, outcome: RunOutcome, nodes: list[NodeRecord] | None = None
    ) -> bool:
        """End the run, then drop its copies."""
        try:
            return await super().finish_run(run_id, outcome, nodes)
        finally:
            await self._hot.delete(_run_key(run_id), _nodes_key(run_id))

    async def save_nodes(self, records: list[NodeRecord]) -> None:
        """Save block records, then drop their runs' copies of the history."""
        try:
            await super().save_nodes(records)
        finally:
            await self._hot.delete(*sorted({_nodes_key(r.run_id) for r in records}))

    async def delete_workflow(self, id_or_name: str) -> None:
        """Delete the workflow and its runs, then drop the runs' copies."""
        workflow = await self.get_workflow(id_or_name)
        async with self._db.session() as session:
            run_ids = list(
                await session.scalars(
                    select(WorkflowRunRow.id).where(WorkflowRunRow.workflow_id == workflow.id)
                )
            )
        try:
            await super().delete_workflow(id_or_name)
        finally:
            keys = [key for run_id in run_ids for key in (_run_key(run_id), _nodes_key(run_id))]
            await self._hot.delete(*keys)


def _run_key(run_id: str) -> str:
    return f"workflow-run:{run_id}"


def _nodes_key(run_id: str) -> str:
    return f"workflow-run-nodes:{run_id}"


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _run_to(record: RunRecord) -> dict[str, Any]:
    body = record.as_dict()
    body["key_id"] = record.key_id  # not in the public form, needed to rebuild the record
    return body


def _run_from(body: dict[str, Any]) -> RunRecord:
    created_at = _when(body["created_at"])
    assert created_at is not None  # every run has one
    return RunRecord(
        id=body["id"], workflow_id=body["workflow_id"], workflow_name=body["workflow"],
        version_id=body["version_id"], version=body["version"],
        status=RunStatus(body["status"]), inputs=body["inputs"], outputs=body["outputs"],
        error=body["error"], key_id=body["key_id"], trigger=body["trigger"],
        parent_run_id=body["parent_run_id"], parent_node_id=body["parent_node_id"],
        tokens=body["tokens"], cost_usd=body["cost_usd"], created_at=created_at,
        finished_at=_when(body["finished_at"]),
    )  # fmt: skip


def _node_from(run_id: str, body: dict[str, Any]) -> NodeRecord:
    return NodeRecord(
        run_id=run_id, node_id=body["node_id"], block_type=body["block_type"],
        status=NodeStatus(body["status"]), inputs=body["inputs"], outputs=body["outputs"],
        error=body["error"], attempts=body["attempts"],
        started_at=_when(body["started_at"]), finished_at=_when(body["finished_at"]),
        tokens=body["tokens"], cost_usd=body["cost_usd"], handles=body["handles"],
    )  # fmt: skip
