"""Block records off the hot path, and live run events for the UI.

The engine hands every block record here instead of writing it: records are buffered per
run and written in batches (every ``flush_seconds``, before a run waits, and inside its
final step), so a block costs no extra database write. Durability does not depend on
these rows: after a crash the replay regenerates every record (recorded steps return
their recorded results), and the upsert keyed by (run, node) makes that idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from atrium.workflows.records import NodeRecord, NodeStatus, RunOutcome, RunStore

log = logging.getLogger("atrium.workflows")

_SUBSCRIBER_QUEUE = 1024


class RunRecorder:
    """Buffers block records, flushes them in batches, and fans events out to watchers."""

    def __init__(self, store: RunStore, *, flush_seconds: float = 0.1) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._dirty: dict[str, dict[str, NodeRecord]] = defaultdict(dict)
        self._waiting: dict[str, set[str]] = defaultdict(set)
        self._watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the periodic flush."""
        self._task = asyncio.create_task(self._flush_forever())

    async def close(self) -> None:
        """Stop flushing and write what is buffered."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    def started(self, run_id: str) -> None:
        """A run's walk began (or resumed after a restart)."""
        self._publish(run_id, {"event": "run.running", "run_id": run_id})

    def node(self, record: NodeRecord) -> None:
        """A block started, waits, or settled."""
        self._dirty[record.run_id][record.node_id] = record
        waiting = self._waiting[record.run_id]
        if record.status == NodeStatus.WAITING:
            waiting.add(record.node_id)
        else:
            waiting.discard(record.node_id)
        self._publish(
            record.run_id,
            {
                "event": f"node.{record.status.value}",
                "run_id": record.run_id,
                "node": record.as_dict(),
            },
        )

    def waiting(self, run_id: str) -> set[str]:
        """Approval nodes this process knows the run waits on."""
        return set(self._waiting.get(run_id, ()))

    def finished(self, run_id: str, outcome: RunOutcome) -> None:
        """A run ended: tell watchers, forget its state."""
        self._waiting.pop(run_id, None)
        self._publish(
            run_id,
            {
                "event": f"run.{outcome.status.value}",
                "run_id": run_id,
                "status": outcome.status.value,
                "outputs": outcome.outputs,
                "error": outcome.error,
            },
        )

    def take(self, run_id: str) -> list[NodeRecord]:
        """A run's buffered records, removed from the buffer (the caller saves them)."""
        return list(self._dirty.pop(run_id, {}).values())

    def give_back(self, records: list[NodeRecord]) -> None:
        """Records taken but not saved: buffered again unless superseded."""
        for record in records:
            self._dirty[record.run_id].setdefault(record.node_id, record)

    async def flush(self, run_id: str | None = None) -> None:
        """Write buffered records (one run's, or all)."""
        async with self._lock:
            if run_id is None:
                batch = [r for records in self._dirty.values() for r in records.values()]
                self._dirty.clear()
            else:
                batch = list(self._dirty.pop(run_id, {}).values())
            if not batch:
                return
            try:
                await self._store.save_nodes(batch)
            except BaseException:
                self.give_back(batch)  # for the next flush
                raise

    @contextlib.asynccontextmanager
    async def watch(self, run_id: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Live events of a run executing in this process, while the context is open."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_SUBSCRIBER_QUEUE)
        self._watchers[run_id].add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers.get(run_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[run_id]

    def _publish(self, run_id: str, event: dict[str, Any]) -> None:
        for queue in self._watchers.get(run_id, ()):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled watcher misses events
                queue.put_nowait(event)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except Exception:
                log.exception("writing workflow block records failed")
