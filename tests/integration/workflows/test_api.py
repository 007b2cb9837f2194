"""The workflow API in process, on the real platform: definitions, versions, runs,
approvals, live events, triggers, and an LLM block answered by the bundled model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import yaml

from atrium.app import Platform
from atrium.bus.events import RouteChanged
from atrium.core.settings import LlamaCppModel, OnnxEmbeddingModel
from atrium.workflows.triggers import MAX_CHAIN_DEPTH, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.integration._gateway import running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ADMIN_KEY = "atr-" + "w" * 40

DOUBLER = {
    "name": "doubler",
    "description": "doubles x, says whether it is big",
    "inputs": {"x": {"type": "integer"}},
    "nodes": [
        {"id": "start", "type": "start"},
        {
            "id": "double",
            "type": "transform",
            "config": {
                "language": "jinja",
                "expressions": {"y": "data * 2"},
                "output_types": {"y": "number"},
            },
        },
        {"id": "big", "type": "condition", "config": {"expression": "value > `100`"}},
        {"id": "end", "type": "end", "config": {"outputs": {"y": {"type": "number"}}}},
    ],
    "edges": [
        {"source": "start", "source_handle": "x", "target": "double", "target_handle": "data"},
        {"source": "double", "source_handle": "y", "target": "big", "target_handle": "value"},
        {"source": "double", "source_handle": "y", "target": "end", "target_handle": "y"},
    ],
    "outputs": {"big": {"source": "big.result"}},
}


@dataclass
class Running:
    platform: Platform
    admin: httpx.AsyncClient

    async def client_for_new_key(self) -> httpx.AsyncClient:
        created = await self.admin.post("/v1/admin/keys", json={"name": "user"})
        assert created.status_code == 201, created.text
        return httpx.AsyncClient(
            transport=self.admin._transport,
            base_url="http://atrium",
            headers={"authorization": f"Bearer {created.json()['key']}"},
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    config = {
        "auth": {"cache_ttl_seconds": 0},
        "models": {
            "smol": LlamaCppModel(n_ctx=2048, aliases=["default"]),
            "minilm": OnnxEmbeddingModel(aliases=["default-embedding"]),
        },
    }
    data_dir = tmp_path_factory.mktemp("atrium")
    gateway = running_gateway(data_dir, ADMIN_KEY, config, request_timeout_s=60)
    async with gateway as (platform, admin):
        yield Running(platform, admin)


async def _publish(admin: httpx.AsyncClient, definition: dict[str, Any]) -> None:
    created = await admin.post("/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    published = await admin.post(f"/v1/workflows/{definition['name']}/publish", json={"note": "v1"})
    assert published.status_code == 201, published.text


async def test_save_publish_run_and_read_the_history(running: Running) -> None:
    admin = running.admin
    await _publish(admin, DOUBLER)
    answered = await admin.post("/v1/workflows/doubler/runs", json={"inputs": {"x": 21}})
    assert answered.status_code == 200, answered.text
    run = answered.json()
    assert run["status"] == "succeeded"
    assert run["outputs"] == {"y": 42, "big": False}
    assert run["version"] == 1
    detail = (await admin.get(f"/v1/workflows/runs/{run['id']}")).json()
    by_node = {n["node_id"]: n for n in detail["nodes"]}
    assert by_node["double"]["inputs"] == {"data": 21}
    assert by_node["double"]["outputs"] == {"y": 42}
    assert by_node["big"]["handles"] == ["false", "done"]
    assert all(n["duration_ms"] is not None for n in detail["nodes"])


async def test_bad_requests_get_openai_shaped_errors(running: Running) -> None:
    admin = running.admin
    missing = await admin.post("/v1/workflows/doubler/runs", json={"inputs": {}})
    assert missing.status_code == 400
    assert "missing required input 'x'" in missing.json()["error"]["message"]
    wrong = await admin.post("/v1/workflows/doubler/runs", json={"inputs": {"x": "21"}})
    assert wrong.status_code == 400
    unknown = await admin.post("/v1/workflows/nope/runs", json={"inputs": {}})
    assert unknown.status_code == 404
    invalid = {
        **DOUBLER,
        "name": "invalid",
        "nodes": [*DOUBLER["nodes"], {"id": "x", "type": "nope"}],
    }
    refused = await admin.post("/v1/workflows", json=invalid)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_workflow"
    checked = (await admin.post("/v1/workflows/validate", json=invalid)).json()
    assert checked["valid"] is False
    assert {"node": "x", "field": "type"} in [
        {k: p[k] for k in ("node", "field")} for p in checked["problems"]
    ]
    no_key = await admin.post(
        "/v1/workflows/doubler/runs", json={"inputs": {"x": 1}}, headers={"authorization": ""}
    )
    assert no_key.status_code == 401
    user = await running.client_for_new_key()
    forbidden = await user.post("/v1/workflows", json={**DOUBLER, "name": "mine"})
    assert forbidden.status_code == 403


async def test_versions_pin_runs_diff_and_yaml_round_trip(running: Running) -> None:
    admin = running.admin
    definition = {**DOUBLER, "name": "versioned"}
    await _publish(admin, definition)
    changed = orjson.loads(orjson.dumps(definition))
    changed["nodes"][1]["config"]["expressions"]["y"] = "data * 3"
    assert (await admin.put("/v1/workflows/versioned", json=changed)).status_code == 200
    draft_run = await admin.post("/v1/workflows/versioned/runs", json={"inputs": {"x": 1}})
    assert draft_run.json()["outputs"]["y"] == 2  # still the published version 1
    await admin.post("/v1/workflows/versioned/publish", json={"note": "triple"})
    assert (await admin.post("/v1/workflows/versioned/runs", json={"inputs": {"x": 1}})).json()[
        "outputs"
    ]["y"] == 3
    pinned = await admin.post(
        "/v1/workflows/versioned/runs", json={"inputs": {"x": 1}, "version": 1}
    )
    assert pinned.json()["outputs"]["y"] == 2
    diff = (await admin.get("/v1/workflows/versioned/diff", params={"from": 1, "to": 2})).json()
    assert diff["nodes_changed"] == {"double": ["config"]}
    assert "data * 3" in diff["unified"]
    versions = (await admin.get("/v1/workflows/versioned/versions")).json()["data"]
    assert [v["version"] for v in versions] == [2, 1]
    exported = await admin.get("/v1/workflows/versioned/export", params={"version": 2})
    text = exported.text
    assert yaml.safe_load(text)["name"] == "versioned"
    reimported = await admin.post(
        "/v1/workflows",
        content=text.replace("versioned", "imported"),
        headers={"content-type": "application/yaml"},
    )
    assert reimported.status_code == 201, reimported.text
    assert reimported.json()["draft"]["nodes"][1]["config"]["expressions"]["y"] == "data * 3"


async def test_keys_see_only_their_own_runs(running: Running) -> None:
    user = await running.client_for_new_key()
    other = await running.client_for_new_key()
    mine = (await user.post("/v1/workflows/doubler/runs", json={"inputs": {"x": 2}})).json()
    assert (await other.get(f"/v1/workflows/runs/{mine['id']}")).status_code == 404
    assert (await user.get(f"/v1/workflows/runs/{mine['id']}")).status_code == 200
    listed = (await other.get("/v1/workflows/runs")).json()["data"]
    assert mine["id"] not in [r["id"] for r in listed]
    assert mine["id"] in [
        r["id"] for r in (await running.admin.get("/v1/workflows/runs")).json()["data"]
    ]


async def test_runs_page_by_cursor_with_a_400_for_a_bad_one(running: Running) -> None:
    admin = running.admin
    await _publish(admin, {**DOUBLER, "name": "paged"})
    started: list[str] = []
    for x in range(5):
        run = await admin.post("/v1/workflows/paged/runs", json={"inputs": {"x": x}})
        started.append(run.json()["id"])
    seen: list[str] = []
    pages: list[dict[str, Any]] = []
    cursor: dict[str, Any] = {}
    while True:
        page = (
            await admin.get(
                "/v1/workflows/runs", params={"workflow": "paged", "limit": 2, **cursor}
            )
        ).json()
        pages.append(page)
        seen += [r["id"] for r in page["data"]]
        assert page["first_id"] == page["data"][0]["id"]
        assert page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        cursor = {"before": page["last_id"]}
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert seen == started[::-1]  # newest first, each run once

    exact = (await admin.get("/v1/workflows/runs", params={"workflow": "paged", "limit": 5})).json()
    assert (len(exact["data"]), exact["has_more"]) == (5, False)
    past_the_end = await admin.get(
        "/v1/workflows/runs", params={"workflow": "paged", "before": started[0]}
    )
    assert past_the_end.json() == {
        "object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False
    }  # fmt: skip

    for bad in ("run_does_not_exist", "", "x" * 65):
        resp = await admin.get("/v1/workflows/runs", params={"before": bad})
        assert resp.status_code == 400, (bad, resp.text)
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "before"
    # Another key's run is no cursor for a key that cannot see it.
    user = await running.client_for_new_key()
    foreign = await user.get("/v1/workflows/runs", params={"before": started[-1]})
    assert foreign.status_code == 400
    assert foreign.json()["error"]["param"] == "before"


APPROVAL = {
    "name": "approve-me",
    "inputs": {"amount": {"type": "number"}},
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "gate", "type": "approval", "config": {"message": "Pay {{ value }}?"}},
        {"id": "paid", "type": "transform", "config": {"expressions": {"ok": "`true`"}}},
    ],
    "edges": [
        {"source": "start", "source_handle": "amount", "target": "gate", "target_handle": "value"},
        {"source": "gate", "source_handle": "approved", "target": "paid"},
    ],
    "outputs": {"paid": {"source": "paid.ok"}},
}


async def test_approval_and_the_event_stream(running: Running) -> None:
    admin = running.admin
    await _publish(admin, APPROVAL)
    started = await admin.post(
        "/v1/workflows/approve-me/runs", json={"inputs": {"amount": 10}, "mode": "async"}
    )
    assert started.status_code == 202
    run_id = started.json()["id"]
    events: list[dict[str, Any]] = []

    async def watch() -> None:
        async with admin.stream("GET", f"/v1/workflows/runs/{run_id}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    events.append(orjson.loads(line[6:]))

    # httpx's ASGI transport hands the body over once the response ends: the stream is
    # read in full after the decision (tests/e2e reads one live over a socket).
    watcher = asyncio.create_task(watch())
    await _until_status(admin, run_id, "waiting")
    decided = await admin.post(
        f"/v1/workflows/runs/{run_id}/approvals/gate", json={"approved": True, "comment": "fine"}
    )
    assert decided.status_code == 202, decided.text
    await asyncio.wait_for(watcher, 20)
    assert "node.waiting" in [e["event"] for e in events]
    assert events[-1]["event"] == "run.succeeded"
    assert events[-1]["run"]["outputs"] == {"paid": True}
    # Events from the store and live ones may interleave; each carries its node's state.
    assert {e["node"]["node_id"] for e in events if e["event"] == "node.succeeded"} >= {
        "gate",
        "paid",
    }
    again = await admin.post(f"/v1/workflows/runs/{run_id}/approvals/gate", json={"approved": True})
    assert again.status_code == 409


async def test_cancel_a_waiting_run(running: Running) -> None:
    admin = running.admin
    run_id = (
        await admin.post(
            "/v1/workflows/approve-me/runs", json={"inputs": {"amount": 1}, "mode": "async"}
        )
    ).json()["id"]
    await _until_status(admin, run_id, "waiting")
    cancelled = await admin.post(f"/v1/workflows/runs/{run_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert (await admin.post(f"/v1/workflows/runs/{run_id}/cancel")).status_code == 409


async def test_signed_webhooks_start_runs_once(running: Running) -> None:
    admin = running.admin
    assert (await admin.put("/v1/admin/secrets/hook", json={"value": "s3cret"})).status_code in (
        200,
        201,
    )
    created = await admin.post(
        "/v1/workflows/doubler/triggers", json={"kind": "webhook", "secret": "hook"}
    )
    assert created.status_code == 201, created.text
    url = created.json()["url"]
    body = orjson.dumps({"x": 60})
    stamp = str(int(time.time()))
    headers = {
        "authorization": "",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign("s3cret", stamp, body),
    }
    first = await admin.post(url, content=body, headers=headers)
    assert first.status_code == 202, first.text
    second = await admin.post(url, content=body, headers=headers)
    assert second.json()["id"] == first.json()["id"]  # a redelivery is the same run
    await _until_status(admin, first.json()["id"], "succeeded")
    assert (await admin.get(f"/v1/workflows/runs/{first.json()['id']}")).json()["outputs"][
        "big"
    ] is True
    forged = {**headers, SIGNATURE_HEADER: sign("wrong", stamp, body)}
    assert (await admin.post(url, content=body, headers=forged)).status_code == 401
    old = str(int(time.time()) - 3600)
    stale = {**headers, TIMESTAMP_HEADER: old, SIGNATURE_HEADER: sign("s3cret", old, body)}
    assert (await admin.post(url, content=body, headers=stale)).status_code == 401


async def test_schedules_fire_once_per_tick_and_events_start_runs(running: Running) -> None:
    admin = running.admin
    bad = await admin.post(
        "/v1/workflows/doubler/triggers", json={"kind": "schedule", "cron": "every day"}
    )
    assert bad.status_code == 400
    created = await admin.post(
        "/v1/workflows/doubler/triggers",
        json={"kind": "schedule", "cron": "*/5 * * * *", "inputs": {"x": 7}},
    )
    assert created.status_code == 201, created.text
    triggers = running.platform.triggers
    later = datetime.now(UTC) + timedelta(minutes=6)
    fired = await triggers.fire_due(later)
    assert len(fired) == 1
    assert await triggers.fire_due(later) == []  # the tick is claimed
    await _until_status(admin, fired[0], "succeeded")
    event_trigger = await admin.post(
        "/v1/workflows/doubler/triggers",
        json={
            "kind": "event",
            "event_type": "route.changed",
            "filter": "name == 'hot'",
            "inputs_from": {"x": "`5`"},
        },
    )
    assert event_trigger.status_code == 201, event_trigger.text
    assert await triggers.on_event(RouteChanged(name="cold", spec=None)) == []
    (started,) = await triggers.on_event(RouteChanged(name="hot", spec=None))
    await _until_status(admin, started, "succeeded")


async def test_an_llm_block_answers_with_the_bundled_model(running: Running) -> None:
    definition = {
        "name": "ask",
        "inputs": {"question": {"type": "string"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "llm",
                "type": "llm",
                "config": {"prompt": "Answer briefly: {{ text }}", "max_tokens": 24},
            },
        ],
        "edges": [
            {
                "source": "start",
                "source_handle": "question",
                "target": "llm",
                "target_handle": "text",
            }
        ],
        "outputs": {"answer": {"source": "llm.text"}},
    }
    await _publish(running.admin, definition)
    run = (
        await running.admin.post(
            "/v1/workflows/ask/runs", json={"inputs": {"question": "What is 2 + 2?"}}
        )
    ).json()
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["answer"].strip()
    assert run["tokens"] > 0


async def _runs_until(
    admin: httpx.AsyncClient,
    workflow: str,
    done: Callable[[list[dict[str, Any]]], bool],
    within: float = 30,
) -> list[dict[str, Any]]:
    """A workflow's runs, polled until ``done`` holds of them."""
    deadline = time.monotonic() + within
    while True:
        found = await admin.get("/v1/workflows/runs", params={"workflow": workflow})
        runs: list[dict[str, Any]] = found.json()["data"]
        if done(runs):
            return runs
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.1)


async def _until_status(
    admin: httpx.AsyncClient, run_id: str, status: str, within: float = 20
) -> None:
    deadline = time.monotonic() + within
    while (await admin.get(f"/v1/workflows/runs/{run_id}")).json()["status"] != status:
        assert time.monotonic() < deadline, f"run {run_id} never reached {status}"
        await asyncio.sleep(0.05)


async def test_documents_upload_with_the_run_request(running: Running) -> None:
    definition = {
        "name": "summarise-upload",
        "inputs": {"document": {"type": "object"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "read", "type": "analyze_document", "config": {"max_tokens": 24}},
        ],
        "edges": [
            {
                "source": "start",
                "source_handle": "document",
                "target": "read",
                "target_handle": "document",
            }
        ],
        "outputs": {"text": {"source": "read.text"}, "summary": {"source": "read.summary"}},
    }
    await _publish(running.admin, definition)
    note = b"# Desk note\n\nSwaps settle two business days after the trade.\n"
    answered = await running.admin.post(
        "/v1/workflows/summarise-upload/runs",
        files={"document": ("desk note.md", note, "text/markdown")},
        data={"mode": "sync"},
    )
    assert answered.status_code == 200, answered.text
    run = answered.json()
    assert run["status"] == "succeeded", run["error"]
    assert "two business days" in run["outputs"]["text"]
    assert run["inputs"]["document"] == {"artifact": {"run_id": run["id"], "name": "desk_note.md"}}
    stored = await running.admin.get(f"/v1/workflows/runs/{run['id']}/artifacts/desk_note.md")
    assert stored.content == note
    refused = await running.admin.post(
        "/v1/workflows/summarise-upload/runs",
        files={"document": ("tool.exe", b"MZ\x90\x00", "application/octet-stream")},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "unsupported_file_type"
    wrong_input = await running.admin.post(
        "/v1/workflows/summarise-upload/runs",
        files={"other": ("a.md", b"# A", "text/markdown")},
    )
    assert wrong_input.status_code == 400
    assert "unknown input 'other'" in wrong_input.json()["error"]["message"]


async def test_a_finished_run_can_start_another_workflow(running: Running) -> None:
    admin = running.admin
    await _publish(admin, {**DOUBLER, "name": "doubler-next"})
    chained = await admin.post(
        "/v1/workflows/doubler-next/triggers",
        json={
            "kind": "event",
            "event_type": "workflow.run.finished",
            "filter": "workflow == 'doubler' && status == 'succeeded'",
            "inputs_from": {"x": "outputs.y"},
        },
    )
    assert chained.status_code == 201, chained.text
    first = (await admin.post("/v1/workflows/doubler/runs", json={"inputs": {"x": 4}})).json()
    assert first["outputs"]["y"] == 8

    def follow_up(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in runs if r["trigger"] == "event" and r["status"] == "succeeded"]

    runs = follow_up(await _runs_until(admin, "doubler-next", lambda rs: bool(follow_up(rs))))
    assert runs[0]["inputs"] == {"x": 8}
    assert runs[0]["outputs"]["y"] == 16


async def test_a_workflow_that_triggers_itself_stops_after_a_bounded_chain(
    running: Running,
) -> None:
    admin = running.admin
    await _publish(admin, {**DOUBLER, "name": "looper"})
    looping = await admin.post(
        "/v1/workflows/looper/triggers",
        json={
            "kind": "event",
            "event_type": "workflow.run.finished",
            "filter": "workflow == 'looper'",
            "inputs_from": {"x": "`1`"},
        },
    )
    assert looping.status_code == 201, looping.text
    await admin.post("/v1/workflows/looper/runs", json={"inputs": {"x": 1}})
    expected = 1 + MAX_CHAIN_DEPTH
    await _runs_until(
        admin,
        "looper",
        lambda runs: len(runs) >= expected and all(r["status"] == "succeeded" for r in runs),
    )
    await asyncio.sleep(1)  # time for a chain that did not stop to go on
    runs = (await admin.get("/v1/workflows/runs", params={"workflow": "looper"})).json()["data"]
    assert len(runs) == expected


async def test_a_blocks_ports_for_a_config(running: Running) -> None:
    admin = running.admin
    body = {
        "type": "transform",
        "config": {"expressions": {"total": "a"}, "output_types": {"total": "number"}},
    }
    ports = await admin.post("/v1/workflows/ports", json=body)
    assert ports.status_code == 200, ports.text
    assert ports.json()["outputs"]["total"]["type"] == "number"
    assert ports.json()["controls"] == ["done", "error"]
    branch = {"type": "condition", "config": {"expression": "x"}}
    condition = (await admin.post("/v1/workflows/ports", json=branch)).json()
    assert condition["controls"] == ["done", "error", "true", "false"]
    unknown = await admin.post("/v1/workflows/ports", json={"type": "nope"})
    assert unknown.status_code == 404
    invalid = await admin.post("/v1/workflows/ports", json={"type": "transform", "config": {}})
    assert invalid.status_code == 400
    assert "expressions" in invalid.json()["error"]["message"]


async def test_many_blocks_ports_at_once_with_an_error_per_block(running: Running) -> None:
    blocks = [
        {"type": "transform", "config": {"expressions": {"total": "a"}}},
        {"type": "transform", "config": {}},
        {"type": "nope"},
        {"type": "condition", "config": {"expression": "x"}},
    ]
    answer = await running.admin.post("/v1/workflows/ports/batch", json={"blocks": blocks})
    assert answer.status_code == 200, answer.text
    good, invalid, unknown, branch = answer.json()["data"]
    assert good["outputs"]["total"]["type"] == "any"
    assert "expressions" in invalid["error"]["message"]
    assert invalid["type"] == "transform"
    assert unknown["error"]["param"] == "type"
    assert branch["controls"] == ["done", "error", "true", "false"]
    too_many = {"blocks": [{"type": "start"}] * 501}
    refused = await running.admin.post("/v1/workflows/ports/batch", json=too_many)
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "invalid_request_error"
