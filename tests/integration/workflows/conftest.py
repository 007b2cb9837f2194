"""Fixtures for the workflow engine: the real repository and DBOS on SQLite (or PostgreSQL).

Test blocks here are real blocks (the Block contract), written to make the engine's
behaviour observable: each side-effecting execution is appended to a ledger, and
failures can be scripted per attempt.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio
from pydantic import Field

from atrium.core.netguard import NetworkPolicy
from atrium.store import Database
from atrium.store.workflows import WorkflowRepository
from atrium.workflows.blocks.base import (
    Block,
    BlockConfig,
    BlockContext,
    BlockError,
    BlockRegistry,
    BlockResult,
    BlockServices,
)
from atrium.workflows.blocks.core import core_blocks
from atrium.workflows.dsl import PortSpec
from atrium.workflows.engine import EngineConfig, WorkflowEngine
from atrium.workflows.recorder import RunRecorder
from atrium.workflows.records import NewRun, RunRecord
from atrium.workflows.service import WorkflowService, new_run_id


@dataclass
class Ledger:
    """Every side-effecting execution, in order: (run, node, attempt)."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def count(self, run_id: str) -> Counter[str]:
        """Executions per node of one run."""
        return Counter(node for run, node, _ in self.calls if run == run_id)


class AddConfig(BlockConfig):
    """How much to add, and how to misbehave."""

    amount: int = 1
    fail_attempts: int = Field(0, description="Fail this many attempts before succeeding.")
    sleep_seconds: float = 0.0


class AddBlock(Block):
    """``x + amount``, as a durable step that records each execution."""

    type = "add"
    title = "Add"
    description = "x + amount"
    Config = AddConfig

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"x": PortSpec(type="integer")}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"x": PortSpec(type="integer")}

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, AddConfig)
        self.ledger.calls.append((ctx.run_id, ctx.node_id, ctx.attempt))
        if config.sleep_seconds:
            await asyncio.sleep(config.sleep_seconds)
        if ctx.attempt <= config.fail_attempts:
            msg = f"scripted failure on attempt {ctx.attempt}"
            raise BlockError(msg)
        return BlockResult({"x": inputs["x"] + config.amount}, tokens=3, cost_usd=0.001)


class BrokenBlock(Block):
    """Returns something that is not a BlockResult: an engine-level fault."""

    type = "broken"
    title = "Broken"
    description = "misbehaves"
    kind = "pure"

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        return "not a result"  # type: ignore[return-value]


@dataclass
class Harness:
    """An engine on a real store, with helpers to save and run definitions."""

    service: WorkflowService
    repo: WorkflowRepository
    engine: WorkflowEngine
    ledger: Ledger

    async def publish(self, definition: dict[str, Any]) -> str:
        """Save and publish; returns the workflow's name."""
        await self.service.create(definition, created_by=None)
        await self.service.publish(definition["name"], note="", created_by=None)
        return str(definition["name"])

    async def start(self, workflow: str, inputs: dict[str, Any]) -> str:
        """Start a run without waiting."""
        version = await self.repo.resolve(workflow, None)
        return await self.engine.submit(NewRun(new_run_id(), version, inputs, "key_test"))

    async def run(self, workflow: str, inputs: dict[str, Any], within: float = 30) -> RunRecord:
        """Run to the end."""
        run_id = await self.start(workflow, inputs)
        assert await self.engine.wait(run_id, within), f"run {run_id} did not end"
        return await self.repo.run(run_id)


class _NoService:
    """Blocks in these tests reach no platform service."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected service call: {name}")


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """The engine on SQLite: the store and DBOS's system database in tmp_path."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}", pool_size=2)
    await db.migrate()
    repo = WorkflowRepository(db)
    ledger = Ledger()
    registry = BlockRegistry([*core_blocks(), AddBlock(ledger), BrokenBlock()])
    none: Any = _NoService()
    services = BlockServices(none, none, none, none, none, NetworkPolicy())
    config = EngineConfig(f"sqlite:///{tmp_path / 'workflows.sqlite'}", "local")
    engine = WorkflowEngine(
        config=config, registry=registry, services=services, store=repo, recorder=RunRecorder(repo)
    )
    service = WorkflowService(repo, engine, none, sync_timeout=30, max_inputs_bytes=100_000)
    await engine.start()
    try:
        yield Harness(service, repo, engine, ledger)
    finally:
        await engine.close()
        await db.close()
