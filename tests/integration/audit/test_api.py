"""The audit trail and the bus admin API in the real platform (SQLite, in-process bus)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from atrium.app import Platform, build_app, build_platform
from atrium.bus import RequestCompleted
from atrium.core.settings import Settings

pytestmark = pytest.mark.integration

ADMIN_KEY = "atr-" + "a" * 40


@dataclass
class Running:
    platform: Platform
    client: httpx.AsyncClient

    async def entries(self, **params: Any) -> list[dict[str, Any]]:
        await self.platform.audit_recorder.flush()
        response = await self.client.get("/v1/audit", params=params)
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data


@pytest_asyncio.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    settings = Settings(
        data_dir=tmp_path,
        auth={"bootstrap_key": ADMIN_KEY, "cache_ttl_seconds": 0},  # type: ignore[arg-type]
        models={},
        workflows={"enabled": False},  # type: ignore[arg-type]
        bus={"retry_backoff_seconds": 0.0, "max_deliveries": 2},  # type: ignore[arg-type]
        audit={"flush_seconds": 60},  # type: ignore[arg-type]
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    transport = httpx.ASGITransport(app, client=("203.0.113.7", 50000))
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://atrium", headers=headers
        ) as client:
            yield Running(platform, client)
    finally:
        await platform.close()


async def _admin_key_id(running: Running) -> str:
    keys = (await running.client.get("/v1/admin/keys")).json()["data"]
    [admin] = [k for k in keys if k["name"] == "bootstrap admin"]
    return str(admin["id"])


async def test_admin_calls_are_recorded_with_who_what_target_where_and_outcome(
    running: Running,
) -> None:
    client = running.client
    admin_id = await _admin_key_id(running)
    created = await client.post("/v1/admin/keys", json={"name": "app", "scopes": ["inference"]})
    assert created.status_code == 201
    app_key, app_id = created.json()["key"], created.json()["id"]
    refused = await client.get("/v1/admin/teams", headers={"authorization": f"Bearer {app_key}"})
    nobody = {"authorization": "Bearer nope"}
    wrong = await client.post("/v1/admin/teams", json={"name": "x"}, headers=nobody)
    revoked = await client.delete(f"/v1/admin/keys/{app_id}")
    await client.get("/v1/models")  # a plain read outside the admin area: not recorded
    assert (refused.status_code, wrong.status_code, revoked.status_code) == (403, 401, 200)

    entries = await running.entries()

    rows = [(e["action"], e["target"], e["actor"], e["outcome"]) for e in entries]
    assert rows == [
        ("GET /v1/admin/keys", "/v1/admin/keys", admin_id, "success"),
        ("POST /v1/admin/keys", "/v1/admin/keys", admin_id, "success"),
        ("GET /v1/admin/teams", "/v1/admin/teams", app_id, "denied"),
        ("POST /v1/admin/teams", "/v1/admin/teams", None, "denied"),
        ("DELETE /v1/admin/keys/{key_id}", f"/v1/admin/keys/{app_id}", admin_id, "success"),
    ]
    assert {e["address"] for e in entries} == {"203.0.113.7"}
    assert [e["detail"]["status"] for e in entries] == [200, 201, 403, 401, 200]
    assert all(e["detail"]["request_id"] for e in entries)
    assert app_key not in json.dumps(entries)  # never a body, never a secret
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]


async def test_inference_metadata_is_recorded_from_request_completed_events(
    running: Running,
) -> None:
    event = RequestCompleted(
        model="smol", key_id="key-1", prompt_tokens=12, completion_tokens=7, latency_ms=85.5,
        status=200, stream=True, endpoint="chat.completions", ttft_ms=20.0, cost_usd=0.001,
    )  # fmt: skip
    await running.platform.bus.publish(event)
    failed = event.model_copy(update={"id": "e2", "status": 429, "key_id": "key-2"})
    await running.platform.bus.publish(failed)

    entries = await _eventually_entries(running, 2, action="inference.")

    first, second = entries
    assert (first["action"], first["target"], first["actor"]) == (
        "inference.chat.completions",
        "smol",
        "key-1",
    )
    assert first["outcome"] == "success"
    assert first["detail"]["prompt_tokens"] == 12
    assert first["detail"]["completion_tokens"] == 7
    assert first["detail"]["latency_ms"] == 85.5
    assert first["detail"]["event_id"] == event.id
    assert first["at"] == event.occurred_at.isoformat()
    assert (second["actor"], second["outcome"]) == ("key-2", "rejected")


async def _eventually_entries(running: Running, count: int, **params: Any) -> list[dict[str, Any]]:
    for _ in range(200):
        entries = await running.entries(**params)
        if len(entries) >= count:
            return entries
        await running.platform.audit_recorder.flush()
    pytest.fail(f"fewer than {count} audit entries")


async def test_query_filters_export_and_bad_input(running: Running) -> None:
    client = running.client
    admin_id = await _admin_key_id(running)
    await client.post("/v1/admin/teams", json={"name": "one"})
    await client.post("/v1/admin/teams", json={"name": "two"})
    await running.entries()
    now = datetime.now(UTC)

    posts = await running.entries(action="POST /v1/admin/teams", actor=admin_id)
    future = await running.entries(since=(now + timedelta(hours=1)).isoformat())
    page = await running.entries(limit=1, after=1)
    latest = await running.entries(limit=2, order="newest")
    before_latest = await running.entries(limit=1, order="newest", before=latest[-1]["seq"])
    export = await client.get("/v1/audit/export", params={"action": "POST"})
    bad = await client.get("/v1/audit", params={"limit": "0"})
    unknown = await client.get("/v1/audit", params={"who": "x"})

    assert [e["target"] for e in posts] == ["/v1/admin/teams"] * 2
    assert future == []
    assert [e["seq"] for e in page] == [2]
    assert latest[0]["seq"] > latest[1]["seq"]
    assert [e["seq"] for e in before_latest] == [latest[1]["seq"] - 1]
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [line["seq"] for line in lines] == [e["seq"] for e in posts]
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "limit"
    assert unknown.status_code == 400


async def test_verify_through_the_api_and_tampering(running: Running) -> None:
    client = running.client
    for name in ("a", "b", "c"):
        await client.post("/v1/admin/teams", json={"name": name})
    entries = await running.entries()
    intact = (await client.get("/v1/audit/verify")).json()
    async with running.platform.db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))

    broken = (await client.get("/v1/audit/verify")).json()

    assert intact["ok"] is True
    assert intact["checked"] >= 3
    assert (broken["ok"], broken["first_bad_seq"], broken["first_bad_id"]) == (
        False,
        2,
        entries[1]["id"],
    )


async def test_target_and_outcome_filters_through_the_api(running: Running) -> None:
    client = running.client
    made = (await client.post("/v1/admin/teams", json={"name": "kept"})).json()
    await client.post("/v1/admin/teams", json={"name": "other"})
    refused = await client.post("/v1/admin/teams", json={"name": ""})
    await client.patch(f"/v1/admin/teams/{made['id']}", json={"rpm": 10})
    await running.entries()

    one_team = await running.entries(target=f"/v1/admin/teams/{made['id']}")
    rejected = await running.entries(target="/v1/admin/teams", outcome="rejected")
    exported = await client.get("/v1/audit/export", params={"outcome": "rejected"})
    bad = await client.get("/v1/audit", params={"outcome": "maybe"})

    assert refused.status_code == 400
    assert [(e["action"], e["outcome"]) for e in one_team] == [
        ("PATCH /v1/admin/teams/{team_id}", "success")
    ]
    assert [(e["target"], e["detail"]["status"]) for e in rejected] == [("/v1/admin/teams", 400)]
    assert [json.loads(line)["seq"] for line in exported.text.splitlines()] == [rejected[0]["seq"]]
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "outcome"


async def test_verify_against_a_head_seen_before_finds_rows_cut_off_the_end(
    running: Running,
) -> None:
    client = running.client
    for name in ("a", "b", "c"):
        await client.post("/v1/admin/teams", json={"name": name})
    await running.entries()
    head = (await client.get("/v1/audit/verify")).json()["head"]
    expect = {"expect_seq": head["seq"], "expect_hash": head["hash"]}
    still = (await client.get("/v1/audit/verify", params=expect)).json()
    async with running.platform.db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": head["seq"]})

    alone = (await client.get("/v1/audit/verify")).json()
    cut = (await client.get("/v1/audit/verify", params=expect)).json()
    half = await client.get("/v1/audit/verify", params={"expect_seq": head["seq"]})

    assert still["ok"] is True
    assert alone["ok"] is True
    assert (cut["ok"], cut["first_bad_seq"]) == (False, head["seq"])
    assert "cut off the end" in cut["reason"]
    assert half.status_code == 400


async def test_audit_and_events_need_an_admin_key(running: Running) -> None:
    created = await running.client.post(
        "/v1/admin/keys", json={"name": "app", "scopes": ["inference"]}
    )
    user = {"authorization": f"Bearer {created.json()['key']}"}
    for path in ("/v1/audit", "/v1/audit/export", "/v1/audit/verify", "/v1/admin/events/streams"):
        assert (await running.client.get(path, headers=user)).status_code == 403
        assert (await running.client.get(path, headers={"authorization": ""})).status_code == 401


async def test_dead_letters_listed_retried_and_deleted_through_the_api(running: Running) -> None:
    client, bus = running.client, running.platform.bus
    broken = True
    handled: list[str] = []

    async def flaky(event: RequestCompleted) -> None:
        if broken:
            raise RuntimeError("warehouse down")
        handled.append(event.id)

    await bus.subscribe(RequestCompleted, "warehouse", "c1", flaky)
    first = RequestCompleted(
        model="m", key_id=None, prompt_tokens=1, completion_tokens=1, latency_ms=1.0,
        status=200, stream=False, endpoint="chat.completions",
    )  # fmt: skip
    second = first.model_copy(update={"id": "second"})
    await bus.publish(first)
    await bus.publish(second)
    letters = await _eventually_letters(client, 2)
    broken = False

    by_event = {json.loads(letter["data"])["id"]: letter for letter in letters}
    retried = await client.post(f"/v1/admin/events/dead-letters/{by_event[first.id]['id']}/retry")
    deleted = await client.delete(f"/v1/admin/events/dead-letters/{by_event['second']['id']}")
    gone = await client.delete(f"/v1/admin/events/dead-letters/{by_event['second']['id']}")

    assert by_event[first.id]["reason"] == "handler failed: RuntimeError: warehouse down"
    assert (by_event[first.id]["group"], by_event[first.id]["attempts"]) == ("warehouse", 2)
    assert (retried.status_code, deleted.status_code, gone.status_code) == (200, 200, 404)
    assert await _eventually_letters(client, 0) == []
    assert handled == [first.id]
    streams = (await client.get("/v1/admin/events/streams")).json()["data"]
    [completed] = [s for s in streams if s["topic"] == RequestCompleted.type]
    assert completed["length"] == 2
    assert "warehouse" in {g["name"] for g in completed["groups"]}


async def _eventually_letters(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    for _ in range(500):
        answer = await client.get("/v1/admin/events/dead-letters")
        letters: list[dict[str, Any]] = answer.json()["data"]
        if len(letters) == count:
            return letters
        await asyncio.sleep(0.01)
    pytest.fail(f"not {count} dead letters")


async def test_replay_through_the_api(running: Running) -> None:
    client, bus = running.client, running.platform.bus
    event = RequestCompleted(
        model="m", key_id=None, prompt_tokens=1, completion_tokens=1, latency_ms=1.0,
        status=200, stream=False, endpoint="chat.completions",
    )  # fmt: skip
    await bus.publish(event)
    got: list[str] = []

    async def collect(e: RequestCompleted) -> None:
        got.append(e.id)

    ok = await client.post(
        "/v1/admin/events/replay",
        json={"topic": RequestCompleted.type, "group": "late", "from_id": "0"},
    )
    await bus.subscribe(RequestCompleted, "late", "c1", collect)
    both = await client.post(
        "/v1/admin/events/replay",
        json={
            "topic": "request.completed",
            "group": "g",
            "from_id": "0",
            "since": "2026-01-01T00:00:00Z",
        },
    )
    unknown = await client.post(
        "/v1/admin/events/replay", json={"topic": "no.such", "group": "g", "from_id": "0"}
    )
    bad_id = await client.post(
        "/v1/admin/events/replay", json={"topic": "request.completed", "group": "g", "from_id": "x"}
    )

    assert ok.status_code == 200
    assert (both.status_code, unknown.status_code, bad_id.status_code) == (400, 404, 400)
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.01)
    assert got == [event.id]
