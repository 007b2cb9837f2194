"""The engine on DBOS: walking graphs, branches, error strategies, approvals, child runs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from atrium.core.errors import ConflictError, InvalidRequestError, NotFoundError
from atrium.workflows.graph import WorkflowValidationError
from atrium.workflows.records import NodeStatus, RunStatus
from tests.integration.workflows.conftest import Harness

pytestmark = pytest.mark.integration


def edge(
    source: str, target: str, source_handle: str = "x", target_handle: str | None = "x"
) -> dict[str, Any]:
    return {
        "source": source,
        "source_handle": source_handle,
        "target": target,
        "target_handle": target_handle,
    }


def chain(name: str, length: int, **node: Any) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "start"}]
    edges = []
    previous = "start"
    for i in range(length):
        nodes.append({"id": f"a{i}", "type": "add", **node})
        edges.append(edge(previous, f"a{i}"))
        previous = f"a{i}"
    return {
        "name": name,
        "inputs": {"x": {"type": "integer"}},
        "outputs": {"x": {"source": f"{previous}.x"}},
        "nodes": nodes,
        "edges": edges,
    }


def fanout(name: str, branches: int, depth: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "start"}]
    edges = []
    ends: dict[str, dict[str, Any]] = {}
    for b in range(branches):
        previous = "start"
        for d in range(depth):
            node_id = f"b{b}_{d}"
            nodes.append({"id": node_id, "type": "add", "config": {"amount": b + 1}})
            edges.append(edge(previous, node_id))
            previous = node_id
        ends[f"r{b}"] = {"type": "integer"}
        edges.append(edge(previous, "end", target_handle=f"r{b}"))
    nodes.append({"id": "end", "type": "end", "config": {"outputs": ends}})
    return {"name": name, "inputs": {"x": {"type": "integer"}}, "nodes": nodes, "edges": edges}


async def test_a_chain_of_steps_runs_to_its_output(harness: Harness) -> None:
    name = await harness.publish(chain("chain", 5))
    run = await harness.run(name, {"x": 10})
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"x": 15}
    assert run.tokens == 15
    nodes = {n.node_id: n for n in await harness.service.nodes(run.id)}
    assert [nodes[f"a{i}"].outputs for i in range(5)] == [{"x": 11 + i} for i in range(5)]
    assert all(
        n.status == NodeStatus.SUCCEEDED and n.duration_ms is not None for n in nodes.values()
    )
    assert harness.ledger.count(run.id) == dict.fromkeys([f"a{i}" for i in range(5)], 1)


async def test_parallel_branches_each_get_their_own_results(harness: Harness) -> None:
    name = await harness.publish(fanout("fanout", branches=10, depth=5))
    run = await harness.run(name, {"x": 0})
    assert run.status == RunStatus.SUCCEEDED
    # Branch b adds b+1 five times: a step matched to another branch's result would show.
    assert run.outputs == {f"r{b}": 5 * (b + 1) for b in range(10)}


async def test_the_branch_not_taken_is_skipped_and_the_join_still_runs(harness: Harness) -> None:
    definition = {
        "name": "branch",
        "inputs": {"x": {"type": "integer"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "check", "type": "condition", "config": {"expression": "value > `5`"}},
            {"id": "big", "type": "add", "config": {"amount": 100}},
            {"id": "small", "type": "add", "config": {"amount": 1}},
            {"id": "after_small", "type": "add"},
            {
                "id": "end",
                "type": "end",
                "config": {
                    "outputs": {
                        "big": {"type": "integer", "required": False},
                        "small": {"type": "integer", "required": False},
                    }
                },
            },
        ],
        "edges": [
            edge("start", "check", "x", "value"),
            {"source": "check", "source_handle": "true", "target": "big"},
            {"source": "check", "source_handle": "false", "target": "small"},
            edge("start", "big"),
            edge("start", "small"),
            edge("small", "after_small"),
            edge("big", "end", target_handle="big"),
            edge("after_small", "end", target_handle="small"),
        ],
    }
    name = await harness.publish(definition)
    high = await harness.run(name, {"x": 9})
    assert high.outputs == {"big": 109}
    statuses = {n.node_id: n.status for n in await harness.service.nodes(high.id)}
    assert statuses["small"] == statuses["after_small"] == NodeStatus.SKIPPED
    low = await harness.run(name, {"x": 1})
    assert low.outputs == {"small": 3}


async def test_retries_back_off_until_the_block_succeeds(harness: Harness) -> None:
    retry = {"attempts": 3, "backoff_seconds": 0.01}
    name = await harness.publish(chain("retry", 1, config={"fail_attempts": 2}, retry=retry))
    run = await harness.run(name, {"x": 1})
    assert run.status == RunStatus.SUCCEEDED
    (node,) = [n for n in await harness.service.nodes(run.id) if n.node_id == "a0"]
    assert node.attempts == 3


async def test_a_failing_block_fails_the_run_with_its_reason(harness: Harness) -> None:
    name = await harness.publish(chain("fails", 2, config={"fail_attempts": 5}))
    run = await harness.run(name, {"x": 1})
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert "a0" in run.error
    assert "scripted failure" in run.error
    assert harness.ledger.count(run.id) == {"a0": 1}


async def test_a_timeout_is_a_failure(harness: Harness) -> None:
    name = await harness.publish(chain("slow", 1, config={"sleep_seconds": 5}, timeout_seconds=0.1))
    run = await harness.run(name, {"x": 1})
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert "timed out" in run.error


async def test_error_strategies_branch_default_and_continue(harness: Harness) -> None:
    definition = {
        "name": "strategies",
        "inputs": {"x": {"type": "integer"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "risky", "type": "add", "config": {"fail_attempts": 9}, "on_error": "branch"},
            {
                "id": "recover",
                "type": "transform",
                "config": {"expressions": {"message": "data.message"}},
            },
            {
                "id": "defaulted",
                "type": "add",
                "config": {"fail_attempts": 9},
                "on_error": "default",
                "default_output": {"x": -1},
            },
            {
                "id": "ignored",
                "type": "add",
                "config": {"fail_attempts": 9},
                "on_error": "continue",
            },
            {"id": "needs_ignored", "type": "add"},
        ],
        "edges": [
            edge("start", "risky"),
            {
                "source": "risky",
                "source_handle": "error",
                "target": "recover",
                "target_handle": "data",
            },
            edge("start", "defaulted"),
            edge("start", "ignored"),
            edge("ignored", "needs_ignored"),
        ],
        "outputs": {
            "message": {"source": "recover.message"},
            "defaulted": {"source": "defaulted.x"},
        },
    }
    name = await harness.publish(definition)
    run = await harness.run(name, {"x": 1})
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs["defaulted"] == -1
    assert "scripted failure" in run.outputs["message"]
    statuses = {n.node_id: n.status for n in await harness.service.nodes(run.id)}
    assert statuses["risky"] == statuses["ignored"] == NodeStatus.FAILED
    assert statuses["needs_ignored"] == NodeStatus.SKIPPED


async def test_an_engine_fault_ends_the_run_failed_never_stuck(harness: Harness) -> None:
    definition = {
        "name": "fault",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "bad", "type": "broken", "on_error": "continue"},
        ],
        "edges": [{"source": "start", "source_handle": "done", "target": "bad"}],
    }
    name = await harness.publish(definition)
    run = await harness.run(name, {})
    assert run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error.startswith("engine error")


async def test_bad_inputs_are_refused_before_a_run_exists(harness: Harness) -> None:
    name = await harness.publish(chain("typed", 1))
    for inputs, reason in (
        ({}, "missing required input 'x'"),
        ({"x": "1"}, "must be integer"),
        ({"x": 1, "y": 2}, "unknown input 'y'"),
    ):
        with pytest.raises(InvalidRequestError, match=reason):
            await harness.start(name, inputs)
    assert await harness.repo.list_runs(None, None, 10, None) == []


async def test_invalid_graphs_are_refused_with_every_problem(harness: Harness) -> None:
    definition = {
        "name": "broken-graph",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "a", "type": "add"},
            {"id": "b", "type": "nope"},
            {"id": "c", "type": "add"},
            {"id": "d", "type": "add"},
            {"id": "t", "type": "transform", "config": {"expressions": {"y": "a.["}}},
        ],
        "edges": [
            edge("c", "d"),
            edge("d", "c"),
            {"source": "start", "source_handle": "done", "target": "a", "target_handle": "x"},
        ],
    }
    with pytest.raises(WorkflowValidationError) as caught:
        await harness.service.create(definition, created_by=None)
    problems = {(p.node, p.field) for p in caught.value.problems}
    assert ("b", "type") in problems  # unknown block
    assert ("t", "config") in problems  # invalid expression
    (bad,) = [p for p in caught.value.problems if p.node == "t"]
    assert "expressions.y" in bad.message
    assert ("c", "edges") in problems
    assert ("d", "edges") in problems
    assert ("start", "edges[2].source_handle") in problems  # a control handle carries no value
    assert ("c", "inputs.x") not in problems  # connected (inside the cycle)


async def test_approval_waits_until_a_person_decides(harness: Harness) -> None:
    definition = {
        "name": "approve",
        "inputs": {"x": {"type": "integer"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "gate", "type": "approval", "config": {"message": "Send {{ value }}?"}},
            {"id": "send", "type": "add"},
            {"id": "declined", "type": "add", "config": {"amount": -100}},
        ],
        "edges": [
            edge("start", "gate", "x", "value"),
            {"source": "gate", "source_handle": "approved", "target": "send"},
            {"source": "gate", "source_handle": "rejected", "target": "declined"},
            edge("start", "send"),
            edge("start", "declined"),
        ],
        "outputs": {"sent": {"source": "send.x"}, "declined": {"source": "declined.x"}},
    }
    name = await harness.publish(definition)
    approved = await harness.start(name, {"x": 5})
    await _until(harness, approved, RunStatus.WAITING)
    with pytest.raises(ConflictError):
        await harness.service.decide(approved, "send", approved=True, approver="k", comment="")
    await harness.service.decide(approved, "gate", approved=True, approver="key_a", comment="ok")
    assert await harness.engine.wait(approved, 10)
    run = await harness.repo.run(approved)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"sent": 6}
    gate = next(n for n in await harness.service.nodes(approved) if n.node_id == "gate")
    assert gate.outputs["approver"] == "key_a"
    assert gate.outputs["message"] == "Send 5?"

    rejected = await harness.start(name, {"x": 5})
    await _until(harness, rejected, RunStatus.WAITING)
    await harness.service.decide(rejected, "gate", approved=False, approver="key_a", comment="no")
    assert await harness.engine.wait(rejected, 10)
    assert (await harness.repo.run(rejected)).outputs == {"declined": -95}


async def test_cancel_ends_a_waiting_run(harness: Harness) -> None:
    definition = {
        "name": "cancel-me",
        "nodes": [{"id": "start", "type": "start"}, {"id": "gate", "type": "approval"}],
        "edges": [{"source": "start", "source_handle": "done", "target": "gate"}],
    }
    name = await harness.publish(definition)
    run_id = await harness.start(name, {})
    await _until(harness, run_id, RunStatus.WAITING)
    cancelled = await harness.service.cancel(run_id)
    assert cancelled.status == RunStatus.CANCELLED
    with pytest.raises(ConflictError):
        await harness.service.cancel(run_id)


async def test_subworkflows_and_map_run_as_child_runs(harness: Harness) -> None:
    await harness.publish(chain("child", 2))
    definition = {
        "name": "parent",
        "inputs": {"items": {"type": "array[integer]"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "each",
                "type": "map",
                "config": {"workflow": "child", "item_input": "x", "concurrency": 2},
            },
            {"id": "one", "type": "subworkflow", "config": {"workflow": "child"}},
            {"id": "args", "type": "transform", "config": {"expressions": {"inputs": "{x: `40`}"}}},
        ],
        "edges": [
            edge("start", "each", "items", "items"),
            {"source": "start", "source_handle": "done", "target": "args"},
            edge("args", "one", "inputs", "inputs"),
        ],
        "outputs": {"results": {"source": "each.results"}, "one": {"source": "one.outputs"}},
    }
    name = await harness.publish(definition)
    run = await harness.run(name, {"items": [1, 2, 3, 4, 5]})
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs["results"] == [{"x": i + 2} for i in range(1, 6)]
    assert run.outputs["one"] == {"x": 42}
    children = await harness.repo.list_runs(None, None, 50, None, include_children=True)
    assert sum(1 for c in children if c.parent_run_id == run.id) == 6


async def _until(harness: Harness, run_id: str, status: RunStatus, within: float = 10) -> None:
    for _ in range(int(within / 0.05)):
        with contextlib.suppress(NotFoundError):  # a child run may not exist yet
            if (await harness.repo.run(run_id)).status == status:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {status}")


async def test_a_run_whose_last_write_failed_is_repaired_not_left_running(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await harness.publish(chain("unlucky", 1))

    async def store_down(*_: Any, **__: Any) -> bool:
        msg = "the store is down"
        raise ConnectionError(msg)

    monkeypatch.setattr(harness.repo, "finish_run", store_down)
    run_id = await harness.start(name, {"x": 1})
    assert await harness.engine.wait(run_id, 10)
    monkeypatch.undo()
    assert (await harness.repo.run(run_id)).status == RunStatus.RUNNING  # the write was lost
    repaired = await harness.service.get_run(run_id)
    assert repaired.status == RunStatus.FAILED
    assert repaired.error is not None
    assert "the store is down" in repaired.error


async def test_cancelling_a_parent_cancels_its_children(harness: Harness) -> None:
    await harness.publish(
        {
            "name": "waits",
            "inputs": {"x": {"type": "integer"}},
            "nodes": [{"id": "start", "type": "start"}, {"id": "gate", "type": "approval"}],
            "edges": [{"source": "start", "source_handle": "done", "target": "gate"}],
        }
    )
    definition = {
        "name": "fans-out",
        "inputs": {"items": {"type": "array"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "each", "type": "map", "config": {"workflow": "waits", "item_input": "x"}},
        ],
        "edges": [edge("start", "each", "items", "items")],
    }
    name = await harness.publish(definition)
    run_id = await harness.start(name, {"items": [1, 2]})
    for index in (0, 1):
        await _until(harness, f"{run_id}.each.{index}", RunStatus.WAITING)
    await harness.service.cancel(run_id)
    children = await harness.repo.children(run_id)
    assert [c.status for c in children] == [RunStatus.CANCELLED, RunStatus.CANCELLED]
    assert (await harness.repo.run(run_id)).status == RunStatus.CANCELLED


async def test_a_loop_repeats_a_workflow_until_its_condition_holds(harness: Harness) -> None:
    await harness.publish(chain("step-up", 1, config={"amount": 3}))
    definition = {
        "name": "loops",
        "inputs": {"start": {"type": "object"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "repeat",
                "type": "loop",
                "config": {
                    "workflow": "step-up",
                    "until": "outputs.x >= `10`",
                    "max_iterations": 20,
                },
            },
            {
                "id": "capped",
                "type": "loop",
                "config": {"workflow": "step-up", "until": "`false`", "max_iterations": 2},
            },
        ],
        "edges": [
            edge("start", "repeat", "start", "inputs"),
            edge("start", "capped", "start", "inputs"),
        ],
        "outputs": {
            "last": {"source": "repeat.outputs"},
            "iterations": {"source": "repeat.iterations"},
            "capped": {"source": "capped.iterations"},
        },
    }
    name = await harness.publish(definition)
    run = await harness.run(name, {"start": {"x": 0}})
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.outputs == {"last": {"x": 12}, "iterations": 4, "capped": 2}
