"""A workflow run is traced: one span for the run, one per block, the blocks its children;
engine blocks (approval, sub-workflow, map, loop) too; a run started by a request is the
root of its own trace, linked to the request's span."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atrium.app import build_app, build_platform
from atrium.core.settings import Settings
from tests.integration.workflows.test_api import DOUBLER

pytestmark = pytest.mark.integration

KEY = "atr-" + "t" * 40
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"

TWICE = {
    "name": "twice",
    "inputs": {"x": {"type": "integer"}},
    "nodes": [
        {"id": "start", "type": "start"},
        {
            "id": "double",
            "type": "transform",
            "config": {
                "language": "jinja",
                "expressions": {"x": "data * 2"},
                "output_types": {"x": "number"},
            },
        },
    ],
    "edges": [
        {"source": "start", "source_handle": "x", "target": "double", "target_handle": "data"}
    ],
    "outputs": {"x": {"source": "double.x"}},
}

ENGINE_BLOCKS = {
    "name": "engine-blocks",
    "inputs": {"x": {"type": "integer"}, "items": {"type": "array[integer]"}},
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "gate", "type": "approval", "config": {"message": "Go with {{ value }}?"}},
        {"id": "args", "type": "transform", "config": {"expressions": {"inputs": "{x: `4`}"}}},
        {"id": "one", "type": "subworkflow", "config": {"workflow": "twice"}},
        {"id": "each", "type": "map", "config": {"workflow": "twice", "item_input": "x"}},
        {
            "id": "repeat",
            "type": "loop",
            "config": {"workflow": "twice", "until": "outputs.x >= `5`", "max_iterations": 3},
        },
    ],
    "edges": [
        {"source": "start", "source_handle": "x", "target": "gate", "target_handle": "value"},
        {"source": "gate", "source_handle": "approved", "target": "args"},
        {"source": "args", "source_handle": "inputs", "target": "one", "target_handle": "inputs"},
        {"source": "start", "source_handle": "items", "target": "each", "target_handle": "items"},
        {
            "source": "args",
            "source_handle": "inputs",
            "target": "repeat",
            "target_handle": "inputs",
        },
    ],
    "outputs": {"one": {"source": "one.outputs"}, "each": {"source": "each.results"}},
}


@asynccontextmanager
async def _traced_platform(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = Settings.model_validate(
        {"data_dir": tmp_path, "auth": {"bootstrap_key": KEY}, "tracing": {"enabled": True}}
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    assert platform.tracing is not None
    exporter = InMemorySpanExporter()
    platform.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_app(settings, platform)
    await platform.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium",
            headers={"authorization": f"Bearer {KEY}"}, timeout=60,
        ) as admin:  # fmt: skip
            yield admin, exporter
    finally:
        await platform.close()


async def _publish(admin: httpx.AsyncClient, definition: dict[str, Any]) -> None:
    assert (await admin.post("/v1/workflows", json=definition)).status_code == 201
    name = definition["name"]
    published = await admin.post(f"/v1/workflows/{name}/publish", json={"note": "v1"})
    assert published.status_code == 201, published.text


async def _until_status(admin: httpx.AsyncClient, run_id: str, *statuses: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            run: dict[str, Any] = (await admin.get(f"/v1/workflows/runs/{run_id}")).json()
            if run["status"] in statuses:
                return run
            await asyncio.sleep(0.05)


def _attr(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


async def test_a_run_has_a_span_and_each_block_a_child_span(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"data_dir": tmp_path, "auth": {"bootstrap_key": KEY}, "tracing": {"enabled": True}}
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    assert platform.tracing is not None
    exporter = InMemorySpanExporter()
    platform.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_app(settings, platform)
    await platform.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium",
            headers={"authorization": f"Bearer {KEY}"}, timeout=60,
        ) as admin:  # fmt: skip
            assert (await admin.post("/v1/workflows", json=DOUBLER)).status_code == 201
            published = await admin.post("/v1/workflows/doubler/publish", json={"note": "v1"})
            assert published.status_code == 201
            answered = await admin.post("/v1/workflows/doubler/runs", json={"inputs": {"x": 21}})
            assert answered.status_code == 200, answered.text
            run = answered.json()
    finally:
        await platform.close()
    spans = exporter.get_finished_spans()
    [run_span] = [s for s in spans if s.name == "workflow.run"]
    assert run_span.attributes is not None
    assert run_span.attributes["workflow.run_id"] == run["id"]
    assert run_span.attributes["workflow.name"] == "doubler"
    blocks = [s for s in spans if s.name.startswith("workflow.block ")]
    nodes = {str((s.attributes or {})["workflow.node_id"]) for s in blocks}
    assert "double" in nodes
    for block in blocks:
        assert block.parent is not None
        assert block.parent.span_id == run_span.context.span_id
        assert (block.attributes or {})["workflow.run_id"] == run["id"]


async def test_engine_blocks_have_spans_and_a_run_links_to_the_request_that_started_it(
    tmp_path: Path,
) -> None:
    async with _traced_platform(tmp_path) as (admin, exporter):
        await _publish(admin, TWICE)
        await _publish(admin, ENGINE_BLOCKS)
        traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
        started = await admin.post(
            "/v1/workflows/engine-blocks/runs",
            json={"inputs": {"x": 1, "items": [1, 2]}},
            headers={"traceparent": traceparent},
        )
        assert started.status_code in {200, 202}, started.text
        run_id = started.json()["id"]
        await _until_status(admin, run_id, "waiting")
        decided = await admin.post(
            f"/v1/workflows/runs/{run_id}/approvals/gate", json={"approved": True}
        )
        assert decided.status_code == 202, decided.text
        run = await _until_status(admin, run_id, "succeeded", "failed")
        assert run["status"] == "succeeded", run
    spans = exporter.get_finished_spans()

    runs = {str(_attr(s, "workflow.run_id")): s for s in spans if s.name == "workflow.run"}
    parent = runs[run_id]
    # The run starts its own trace (it may outlive the request, or resume long after),
    # linked to the span of the request that started it.
    request = next(
        s for s in spans
        if s.context.trace_id == int(CALLER_TRACE, 16) and s.name.endswith("/runs")
    )  # fmt: skip
    assert parent.context.trace_id != int(CALLER_TRACE, 16)
    assert parent.parent is None
    [link] = parent.links
    assert link.context.trace_id == int(CALLER_TRACE, 16)
    assert link.context.span_id == request.context.span_id

    blocks = {
        _attr(s, "workflow.node_id"): s
        for s in spans
        if s.name.startswith("workflow.block ") and _attr(s, "workflow.run_id") == run_id
    }
    for node, kind in (("gate", "approval"), ("one", "subworkflow"), ("each", "map"),
                       ("repeat", "loop")):  # fmt: skip
        assert blocks[node].name == f"workflow.block {kind}"
        assert blocks[node].parent is not None
        assert blocks[node].parent.span_id == parent.context.span_id
    # Child runs ran in this process: each child's run span sits under its block's span.
    for child_id, node in ((f"{run_id}.one.0", "one"), (f"{run_id}.each.1", "each"),
                           (f"{run_id}.repeat.0", "repeat")):  # fmt: skip
        child = runs[child_id]
        assert child.parent is not None
        assert child.parent.span_id == blocks[node].context.span_id
        assert not child.links
