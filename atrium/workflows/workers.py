"""Worker liveness and takeover: the runs of a worker that died finish on another.

Each worker process heartbeats into the store. Every worker also watches for peers whose
heartbeat has gone stale; one of them claims the silent worker with a single conditional
UPDATE (so exactly one takes it over) and puts its unfinished runs back on the shared
queue. DBOS fences the old owner: should it come back, its writes for those runs fail.
A resumed run replays: completed blocks return their checkpointed outputs and only the
unfinished ones run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

log = logging.getLogger("atrium.workflows")


class WorkerDirectory(Protocol):
    """Where workers heartbeat and claim each other (the relational store)."""

    async def heartbeat(self, executor_id: str, role: str) -> None:
        """Record that ``executor_id`` is alive now."""
        ...

    async def stale_workers(self, older_than: timedelta) -> list[str]:
        """Workers silent for longer than ``older_than`` and not yet taken over."""
        ...

    async def claim_worker(self, executor_id: str, by: str, older_than: timedelta) -> bool:
        """Claim a silent worker; True for exactly one claimer."""
        ...

    async def workers(self) -> Sequence[KnownWorker]:
        """Every worker known, live or not."""
        ...


class KnownWorker(Protocol):
    """What the directory knows of one worker."""

    @property
    def role(self) -> str: ...
    @property
    def heartbeat_at(self) -> datetime: ...
    @property
    def taken_over_by(self) -> str | None: ...


class RunTakeover(Protocol):
    """The engine's side of a takeover."""

    async def pending_of(self, executor_id: str) -> list[str]:
        """Unfinished runs last owned by ``executor_id``."""
        ...

    async def resume(self, run_id: str) -> None:
        """Put a run back on the shared queue."""
        ...


class WorkerMonitor:
    """Heartbeats for this worker; takes over the runs of workers that went silent."""

    def __init__(
        self,
        directory: WorkerDirectory,
        engine: RunTakeover,
        *,
        executor_id: str,
        role: str,
        heartbeat_seconds: float,
        takeover_after_seconds: float,
    ) -> None:
        self._directory = directory
        self._engine = engine
        self._executor_id = executor_id
        self._role = role
        self._period = heartbeat_seconds
        self._stale = timedelta(seconds=takeover_after_seconds)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Heartbeat once now, then keep watching."""
        await self._directory.heartbeat(self._executor_id, self._role)
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """Stop heartbeating (a worker that stops is taken over like one that died)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def live(self) -> dict[str, int]:
        """Workers with a fresh heartbeat by role; a role whose workers all went silent is 0."""
        fresh_after = datetime.now(UTC) - self._stale
        counts: dict[str, int] = {}
        for worker in await self._directory.workers():
            alive = worker.taken_over_by is None and worker.heartbeat_at >= fresh_after
            counts[worker.role] = counts.get(worker.role, 0) + int(alive)
        return counts

    async def tick(self) -> list[str]:
        """One heartbeat and one takeover pass; the runs resumed."""
        await self._directory.heartbeat(self._executor_id, self._role)
        resumed: list[str] = []
        for silent in await self._directory.stale_workers(self._stale):
            if silent == self._executor_id:
                continue
            if not await self._directory.claim_worker(silent, self._executor_id, self._stale):
                continue
            runs = await self._engine.pending_of(silent)
            log.warning("worker %s went silent: taking over %d run(s)", silent, len(runs))
            for run_id in runs:
                await self._engine.resume(run_id)
                resumed.append(run_id)
        return resumed

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                await self.tick()
            except Exception:
                log.exception("worker heartbeat or takeover failed")
