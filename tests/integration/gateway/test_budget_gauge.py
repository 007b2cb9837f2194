"""The spend gauge describes every stored budget from the moment a process starts, before
any request of the key or team reaches it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from atrium.app import build_app, build_platform
from atrium.core.settings import Settings
from atrium.store.usage import UsageRecord

pytestmark = pytest.mark.integration

KEY = "atr-" + "b" * 40
GAUGE = "atrium_budget_spent_ratio"


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": KEY},
            "models": {},
            "workflows": {"enabled": False},
        }
    )


async def test_stored_budgets_are_reported_at_start(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = build_platform(settings, announce_key=lambda _: None)
    await first.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(build_app(settings, first)),
            base_url="http://atrium",
            headers={"authorization": f"Bearer {KEY}"},
        ) as admin:
            team = await admin.post(
                "/v1/admin/teams", json={"name": "ml", "budget_usd": 50, "budget_period": "day"}
            )
            assert team.status_code == 201, team.text
            body = {"name": "capped", "budget_usd": 10, "budget_period": "month", "team": "ml"}
            key = await admin.post("/v1/admin/keys", json=body)
            assert key.status_code == 201, key.text
            gone = await admin.post("/v1/admin/keys", json={**body, "name": "gone", "team": None})
            assert (await admin.delete(f"/v1/admin/keys/{gone.json()['id']}")).status_code == 200
        key_id, team_id = key.json()["id"], team.json()["id"]
        spent = UsageRecord(
            day=datetime.now(UTC).date(), key_id=key_id, team_id=team_id, model="m",
            requests=3, errors=0, prompt_tokens=30, completion_tokens=30, spend_usd=2.5,
        )  # fmt: skip
        await first.usage.add([spent])
    finally:
        await first.close()

    second = build_platform(settings, announce_key=lambda _: None)
    registry = second.metrics.registry
    await second.start()
    try:
        key_ratio = registry.get_sample_value(
            GAUGE, {"subject": f"key:{key_id}", "period": "month"}
        )
        team_ratio = registry.get_sample_value(
            GAUGE, {"subject": f"team:{team_id}", "period": "day"}
        )
        gone_ratio = registry.get_sample_value(
            GAUGE, {"subject": f"key:{gone.json()['id']}", "period": "month"}
        )
    finally:
        await second.close()
    assert key_ratio == pytest.approx(0.25)
    assert team_ratio == pytest.approx(0.05)
    assert gone_ratio is None  # a revoked key's budget is not reported
