"""The engine announces each run's start and every block's end on the bus (small events:
status, timing, tokens, never inputs or outputs) and counts runs and blocks in its metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from atrium.bus import Event, EventPublisher, InProcessEventBus
from atrium.bus.events import WorkflowBlockFinished, WorkflowRunFinished, WorkflowRunStarted
from atrium.core.netguard import NetworkPolicy
from atrium.observability.metrics import WorkflowMetrics
from atrium.store import Database
from atrium.store.workflows import WorkflowRepository
from atrium.workflows.blocks.base import BlockRegistry, BlockServices
from atrium.workflows.blocks.core import core_blocks
from atrium.workflows.engine import EngineConfig, WorkflowEngine
from atrium.workflows.recorder import RunRecorder
from atrium.workflows.records import RunStatus
from atrium.workflows.service import WorkflowService
from tests.integration.workflows.conftest import AddBlock, Harness, Ledger, _NoService
from tests.integration.workflows.test_engine import chain

pytestmark = pytest.mark.integration

TOPICS: tuple[type[Event], ...] = (WorkflowRunStarted, WorkflowBlockFinished, WorkflowRunFinished)


@dataclass
class Announced:
    """A harness whose engine publishes on a real in-process bus, and what it published."""

    harness: Harness
    events: list[Event]
    registry: CollectorRegistry

    async def until(self, count: int, event_type: type[Event]) -> list[Any]:
        for _ in range(400):
            seen = [e for e in self.events if isinstance(e, event_type)]
            if len(seen) >= count:
                return seen
            await asyncio.sleep(0.025)
        raise AssertionError(f"{count} {event_type.type} events not published: {self.events}")

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest_asyncio.fixture
async def announced(tmp_path: Path) -> AsyncIterator[Announced]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}", pool_size=2)
    await db.migrate()
    bus = InProcessEventBus()
    await bus.start()
    publisher = EventPublisher(bus)
    await publisher.start()
    events: list[Event] = []

    async def keep(event: Event) -> None:
        events.append(event)

    for topic in TOPICS:
        await bus.subscribe(topic, "test", "c", keep)
    repo = WorkflowRepository(db)
    ledger = Ledger()
    none: Any = _NoService()
    registry = CollectorRegistry()
    engine = WorkflowEngine(
        config=EngineConfig(f"sqlite:///{tmp_path / 'workflows.sqlite'}", "local"),
        registry=BlockRegistry([*core_blocks(), AddBlock(ledger)]),
        services=BlockServices(none, none, none, none, none, NetworkPolicy()),
        store=repo,
        recorder=RunRecorder(repo),
        publish=publisher.publish_nowait,
        metrics=WorkflowMetrics(registry),
    )
    service = WorkflowService(repo, engine, none, sync_timeout=30, max_inputs_bytes=100_000)
    await engine.start()
    try:
        yield Announced(Harness(service, repo, engine, ledger), events, registry)
    finally:
        await engine.close()
        await publisher.close()
        await bus.close()
        await db.close()


async def test_a_run_announces_its_start_every_block_and_its_end(announced: Announced) -> None:
    harness = announced.harness
    name = await harness.publish(chain("announced", 3))
    run = await harness.run(name, {"x": 1})
    assert run.status == RunStatus.SUCCEEDED
    [started] = await announced.until(1, WorkflowRunStarted)
    assert (started.run_id, started.workflow, started.workflow_version) == (run.id, name, 1)
    assert started.key_id == "key_test"
    [finished] = await announced.until(1, WorkflowRunFinished)
    blocks = await announced.until(4, WorkflowBlockFinished)  # start + three adds
    by_node = {b.node_id: b for b in blocks}
    assert set(by_node) == {"start", "a0", "a1", "a2"}
    assert all(b.run_id == run.id and b.status == "succeeded" for b in blocks)
    assert (by_node["a0"].block_type, by_node["a0"].tokens, by_node["a0"].attempts) == ("add", 3, 1)
    assert all(b.duration_ms is not None and b.duration_ms >= 0 for b in blocks)
    # Events stay small: a block's inputs and outputs are not in them.
    assert not {"inputs", "outputs"} & set(WorkflowBlockFinished.model_fields)
    # Topics are delivered independently: the order shows in when each event occurred.
    assert started.occurred_at <= min(b.occurred_at for b in blocks)
    assert max(b.occurred_at for b in blocks) <= finished.occurred_at
    assert finished.status == "succeeded"


async def test_a_failing_block_is_announced_failed_with_its_error(announced: Announced) -> None:
    harness = announced.harness
    definition = chain("fails", 2, config={"fail_attempts": 9})
    definition["nodes"][1]["retry"] = {"attempts": 2, "backoff_seconds": 0}
    name = await harness.publish(definition)
    run = await harness.run(name, {"x": 1})
    assert run.status == RunStatus.FAILED
    blocks = await announced.until(2, WorkflowBlockFinished)
    [failed] = [b for b in blocks if b.node_id == "a0"]
    assert (failed.status, failed.attempts) == ("failed", 2)
    assert failed.error == "scripted failure on attempt 2"
    assert "a1" not in {b.node_id for b in blocks}  # never ran


async def test_runs_and_blocks_are_counted_in_the_workflow_metrics(announced: Announced) -> None:
    harness = announced.harness
    name = await harness.publish(chain("measured", 2))
    for x in (1, 2):
        assert (await harness.run(name, {"x": x})).status == RunStatus.SUCCEEDED
    runs = announced.sample("atrium_workflow_runs_total", workflow=name, status="succeeded")
    assert runs == 2
    assert announced.sample("atrium_workflow_run_duration_seconds_count", workflow=name) == 2
    blocks = announced.sample(
        "atrium_workflow_block_duration_seconds_count", block_type="add", status="succeeded"
    )
    assert blocks == 4


async def test_a_cancelled_run_is_announced_and_counted(announced: Announced) -> None:
    harness = announced.harness
    name = await harness.publish(chain("cancelled", 1, config={"sleep_seconds": 30}))
    run_id = await harness.start(name, {"x": 1})
    await announced.until(1, WorkflowRunStarted)
    await harness.engine.cancel(run_id)
    [finished] = await announced.until(1, WorkflowRunFinished)
    assert (finished.run_id, finished.status, finished.error) == (run_id, "cancelled", "cancelled")
    runs = announced.sample("atrium_workflow_runs_total", workflow=name, status="cancelled")
    assert runs == 1
    # Its walk's time is not known where it was cancelled: no duration is made up.
    assert announced.sample("atrium_workflow_run_duration_seconds_count", workflow=name) is None
