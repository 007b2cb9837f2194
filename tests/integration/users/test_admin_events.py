"""Admin changes are announced on the bus: a user created or changed (``user.changed``)
and an API key created (``key.created``), through the whole platform's admin API; and
the platform's /metrics carries the bus, RAG and workflow metrics with alerting off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from atrium.app import Platform, build_app, build_platform
from atrium.bus import Event, KeyChanged
from atrium.bus.events import KeyCreated, UserChanged
from atrium.core.settings import Settings

pytestmark = pytest.mark.integration

ADMIN_KEY = "atr-" + "e" * 40
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Running:
    platform: Platform
    client: httpx.AsyncClient
    events: list[Event]

    async def until(self, count: int, event_type: type[Event]) -> list[Event]:
        for _ in range(400):
            seen = [e for e in self.events if isinstance(e, event_type)]
            if len(seen) >= count:
                return seen
            await asyncio.sleep(0.025)
        raise AssertionError(f"{count} {event_type.type} events not published: {self.events}")


@pytest_asyncio.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": ADMIN_KEY},
            "workflows": {"enabled": False},
            "web": {"password_time_cost": 1, "password_memory_kib": 8192,
                    "admin_password": "first-admin-password"},
            "alerts": {"enabled": False},
        }
    )  # fmt: skip
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    events: list[Event] = []

    async def keep(event: Event) -> None:
        events.append(event)

    for topic in (UserChanged, KeyCreated, KeyChanged):
        await platform.bus.subscribe(topic, "test", "c", keep)
    transport = httpx.ASGITransport(app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://atrium.test") as client:
            yield Running(platform, client, events)
    finally:
        await platform.close()


async def test_users_created_and_changed_are_announced(running: Running) -> None:
    client = running.client
    body = {"username": "ada", "password": "a-long-password-1", "role": "user"}
    created = await client.post("/v1/admin/users", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    changes = {"role": "admin", "disabled": True, "password": "another-password-2"}
    changed = await client.patch(f"/v1/admin/users/{user_id}", json=changes, headers=AUTH)
    assert changed.status_code == 200, changed.text
    first, second = await running.until(2, UserChanged)
    assert isinstance(first, UserChanged)
    assert isinstance(second, UserChanged)
    assert (first.user_id, first.username, first.change, first.role, first.disabled) == (
        user_id, "ada", "created", "user", False,
    )  # fmt: skip
    assert first.by is None  # an API key, not a signed-in admin, made the change
    assert (second.change, sorted(second.fields), second.role, second.disabled) == (
        "updated", ["disabled", "password", "role"], "admin", True,
    )  # fmt: skip
    # No password or hash travels in the event.
    assert "another-password-2" not in second.model_dump_json()
    assert not {"password", "password_hash"} & set(UserChanged.model_fields)


async def test_an_unchanged_user_is_not_announced(running: Running) -> None:
    client = running.client
    body = {"username": "bob", "password": "a-long-password-1"}
    user_id = (await client.post("/v1/admin/users", json=body, headers=AUTH)).json()["id"]
    same = await client.patch(f"/v1/admin/users/{user_id}", json={"role": "user"}, headers=AUTH)
    assert same.status_code == 200
    await running.until(1, UserChanged)
    await asyncio.sleep(0.1)
    assert [e.change for e in running.events if isinstance(e, UserChanged)] == ["created"]


async def test_a_created_key_is_announced_without_its_secret(running: Running) -> None:
    body = {"name": "ci", "owner": "build", "scopes": ["inference"]}
    created = await running.client.post("/v1/admin/keys", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    [event] = await running.until(1, KeyCreated)
    assert isinstance(event, KeyCreated)
    record = created.json()
    assert (event.key_id, event.name, event.owner, event.scopes, event.team_id) == (
        record["id"], "ci", "build", ["inference"], None,
    )  # fmt: skip
    assert record["key"] not in event.model_dump_json()
    revoked = await running.client.delete(f"/v1/admin/keys/{record['id']}", headers=AUTH)
    assert revoked.status_code == 200
    [changed] = await running.until(1, KeyChanged)
    assert isinstance(changed, KeyChanged)
    assert changed.key_id == record["id"]


async def test_metrics_carry_bus_rag_and_workflow_series_with_alerting_off(
    running: Running,
) -> None:
    assert running.platform.alerts is None
    resp = await running.client.get("/metrics", headers=AUTH)
    assert resp.status_code == 200
    text = resp.text
    # Read from the bus at the scrape: the test's own group on user.changed is there.
    assert 'atrium_bus_pending{group="test",topic="user.changed"} 0.0' in text
    assert "atrium_bus_dead_letters 0.0" in text
    for family in ("atrium_rag_queries_total counter",
                   "atrium_rag_retrieval_duration_seconds histogram",
                   "atrium_rag_documents_indexed_total counter",
                   "atrium_rag_documents_failed_total counter",
                   "atrium_workflow_runs_total counter",
                   "atrium_workflow_run_duration_seconds histogram",
                   "atrium_workflow_block_duration_seconds histogram"):  # fmt: skip
        assert f"# TYPE {family}\n" in text, family
