"""The whole platform in process, on SQLite + in-process bus and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from atrium.app import Platform, build_app, build_platform
from atrium.bus import RequestCompleted
from atrium.core.settings import LlamaCppModel, OnnxEmbeddingModel, Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_KEY = "atr-" + "a" * 40
PROMPT = "Tell me about the secret merger of Zyxo Corp."


@dataclass
class Running:
    platform: Platform
    client: httpx.AsyncClient
    events: Collected


class Collected:
    """Events a test subscription received."""

    def __init__(self) -> None:
        self.items: list[RequestCompleted] = []
        self._changed = asyncio.Condition()

    async def add(self, event: RequestCompleted) -> None:
        async with self._changed:
            self.items.append(event)
            self._changed.notify_all()

    async def wait_for(self, count: int) -> list[RequestCompleted]:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: len(self.items) >= count)
        return self.items


def _settings(tmp_path: Path, store_url: str | None, bus: str, prefix: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        store={"url": store_url},  # type: ignore[arg-type]
        bus={"backend": bus, "stream_prefix": prefix},  # type: ignore[arg-type]
        auth={"bootstrap_key": ADMIN_KEY, "cache_ttl_seconds": 0},  # type: ignore[arg-type]
        models={
            "smol": LlamaCppModel(n_ctx=512, aliases=["default"]),
            "minilm": OnnxEmbeddingModel(),
        },
        prices={"smol": {"input_per_million": 1.0, "output_per_million": 2.0}},  # type: ignore[dict-item]
    )


@pytest.fixture(params=["sqlite+inprocess", "postgresql+redis"])
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Settings, str]:
    prefix = f"atrium-test-{secrets.token_hex(4)}:"
    if request.param == "sqlite+inprocess":
        return _settings(tmp_path, None, "inprocess", prefix), request.param
    url: str = request.getfixturevalue("empty_postgres_url")
    return _settings(tmp_path, url, "redis", prefix), request.param


@pytest_asyncio.fixture
async def running(backends: tuple[Settings, str]) -> AsyncIterator[Running]:
    settings, _ = backends
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    events = Collected()
    subscription = await platform.bus.subscribe(RequestCompleted, "test", "c1", events.add)
    transport = httpx.ASGITransport(app)
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://atrium", headers=headers
        ) as client:
            yield Running(platform, client, events)
    finally:
        await subscription.stop()
        await platform.close()
        if settings.bus.backend == "redis":
            cleanup = aioredis.Redis.from_url(settings.redis.url)
            keys = [k async for k in cleanup.scan_iter(match=f"{settings.bus.stream_prefix}*")]
            if keys:
                await cleanup.delete(*keys)
            await cleanup.aclose()


async def test_keys_chat_and_events_work_on_both_backends(running: Running) -> None:
    created = await running.client.post(
        "/v1/admin/keys", json={"name": "team", "allowed_models": ["default"], "rpm": 5}
    )
    assert created.status_code == 201
    key = created.json()["key"]
    user = {"authorization": f"Bearer {key}"}

    chat = await running.client.post(
        "/v1/chat/completions",
        headers=user,
        json={
            "model": "default",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 4,
        },
    )
    assert chat.status_code == 200, chat.text
    usage = chat.json()["usage"]

    denied = await running.client.post(
        "/v1/embeddings", headers=user, json={"model": "minilm", "input": "x"}
    )
    assert denied.status_code == 403

    revoked = await running.client.delete(f"/v1/admin/keys/{created.json()['id']}")
    assert revoked.status_code == 200
    after = await running.client.post(
        "/v1/chat/completions",
        headers=user,
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "revoked_api_key"

    events = await running.events.wait_for(3)
    assert sorted(e.status for e in events) == [200, 401, 403]
    ok = next(e for e in events if e.status == 200)
    assert ok.model == "smol"
    assert ok.key_id == created.json()["id"]
    assert ok.endpoint == "chat.completions"
    assert ok.prompt_tokens == usage["prompt_tokens"]
    assert ok.completion_tokens == usage["completion_tokens"]
    assert ok.latency_ms > 0
    assert all("Zyxo" not in e.model_dump_json() for e in events)


async def test_readiness_reports_store_and_models(running: Running) -> None:
    ready = await running.client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["store"] == "ok"
    assert set(body["models"]) == {"smol", "minilm"}


async def test_a_teams_limit_is_shared_by_its_keys(running: Running) -> None:
    team = await running.client.post("/v1/admin/teams", json={"name": "quants", "rpm": 2})
    assert team.status_code == 201
    duplicate = await running.client.post("/v1/admin/teams", json={"name": "quants"})
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["param"] == "name"
    keys = []
    for name in ("alice", "bob"):
        created = await running.client.post(
            "/v1/admin/keys", json={"name": name, "team": "quants", "rpm": 100}
        )
        assert created.status_code == 201
        assert created.json()["team"] == {"id": team.json()["id"], "name": "quants"}
        keys.append(created.json()["key"])
    unknown = await running.client.post("/v1/admin/keys", json={"name": "eve", "team": "nope"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "team"
    statuses = []
    for key in (keys[0], keys[1], keys[0]):
        answer = await running.client.post(
            "/v1/embeddings",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "minilm", "input": "x"},
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert "team 'quants'" in answer.json()["error"]["message"]
    assert statuses == [200, 200, 429]
    listed = (await running.client.get("/v1/admin/teams")).json()["data"]
    assert [t["name"] for t in listed] == ["quants"]


async def _usage(running: Running, group_by: str) -> list[dict[str, object]]:
    answer = await running.client.get("/v1/admin/usage", params={"group_by": group_by})
    assert answer.status_code == 200, answer.text
    data: list[dict[str, object]] = answer.json()["data"]
    return data


async def _settled_usage(
    running: Running, group_by: str, *, requests: int
) -> list[dict[str, object]]:
    """The report once the usage consumer (a separate bus group) has counted everything."""
    async with asyncio.timeout(10):
        while True:
            lines = await _usage(running, group_by)
            if sum(int(str(line["requests"])) for line in lines) == requests:
                return lines
            await asyncio.sleep(0.05)


async def test_usage_and_spend_are_reported_by_key_team_and_model(running: Running) -> None:
    await running.client.post("/v1/admin/teams", json={"name": "research"})
    created = await running.client.post("/v1/admin/keys", json={"name": "r1", "team": "research"})
    user = {"authorization": f"Bearer {created.json()['key']}"}
    body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    usages = []
    for _ in range(2):
        answer = await running.client.post("/v1/chat/completions", headers=user, json=body)
        usages.append(answer.json()["usage"])
    await running.client.post("/v1/embeddings", headers=user, json={"model": "nope", "input": "x"})
    await running.events.wait_for(3)
    by_team = await _settled_usage(running, "team", requests=3)
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)
    assert by_team == [
        {
            "group": created.json()["team"]["id"],
            "label": "research",
            "requests": 3,
            "errors": 1,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "spend_usd": round((prompt * 1.0 + completion * 2.0) / 1e6, 6),
            "day": None,
        }
    ]
    by_model = {line["group"]: line["requests"] for line in await _usage(running, "model")}
    assert by_model == {"smol": 2, "unknown": 1}
    per_day = await running.client.get(
        "/v1/admin/usage", params={"group_by": "model", "per_day": "true"}
    )
    days = {line["group"] for line in await _usage(running, "day")}
    split: dict[str, int] = {}
    for line in per_day.json()["data"]:
        assert line["day"] in days
        split[line["group"]] = split.get(line["group"], 0) + line["requests"]
    assert split == by_model
    bad = await running.client.get("/v1/admin/usage", params={"group_by": "colour"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "group_by"


async def test_answers_carry_overhead_and_each_request_logs_one_json_line(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="atrium.requests")
    answer = await running.client.post("/v1/embeddings", json={"model": "minilm", "input": PROMPT})
    assert answer.status_code == 200
    assert float(answer.headers["x-atrium-overhead-ms"]) >= 0
    assert answer.headers["x-atrium-served-by"] == "minilm"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "atrium.requests"]
    assert len(lines) == 1
    line = lines[0]
    assert line["model"] == "minilm"
    assert line["status"] == 200
    assert line["endpoint"] == "embeddings"
    assert line["prompt_tokens"] > 0
    assert 0 <= line["overhead_ms"] <= line["latency_ms"]
    assert "Zyxo" not in caplog.text
    assert ADMIN_KEY not in caplog.text
    metrics = (await running.client.get("/metrics")).text
    assert "gen_ai_server_request_duration_seconds_bucket" in metrics
    assert 'gen_ai_client_token_usage_count{gen_ai_operation_name="embeddings"' in metrics
    assert "atrium_overhead_seconds_bucket" in metrics


async def test_a_spent_budget_refuses_further_requests(running: Running) -> None:
    created = await running.client.post(
        "/v1/admin/keys", json={"name": "capped", "budget_usd": 0.00001, "budget_period": "day"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["budget_usd"] == 0.00001
    user = {"authorization": f"Bearer {created.json()['key']}"}
    body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    first = await running.client.post("/v1/chat/completions", headers=user, json=body)
    assert first.status_code == 200  # 1 USD per million tokens: this crosses the budget
    await asyncio.sleep(0.05)  # the cost is charged off the hot path
    second = await running.client.post("/v1/chat/completions", headers=user, json=body)
    assert second.status_code == 429
    error = second.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
    assert "key 'capped' has spent" in error["message"]
    bad = await running.client.post(
        "/v1/admin/keys", json={"name": "x", "budget_usd": 5, "budget_period": "week"}
    )
    assert bad.status_code == 400
