"""Alerts through the whole platform: an event on the bus fires a rule; the admin API shows it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from atrium.app import build_app, build_platform
from atrium.bus.events import AlertFired
from atrium.core.settings import Settings

pytestmark = pytest.mark.integration

KEY = "atr-" + "a" * 40


async def _until(client: httpx.AsyncClient, state: str) -> list[dict[str, Any]]:
    for _ in range(400):
        alerts: list[dict[str, Any]] = (await client.get("/v1/admin/alerts")).json()[state]
        if alerts:
            return alerts
        await asyncio.sleep(0.025)
    raise AssertionError(f"no {state} alert")


async def test_a_rolled_back_release_event_fires_an_alert_seen_in_the_admin_api(
    tmp_path: Path,
) -> None:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": KEY},
            "workflows": {"enabled": False},
            "alerts": {
                "interval_seconds": 0.05,
                "rules": [
                    {"name": "release-rolled-back", "kind": "event", "event": "alert.fired",
                     "match": {"name": "release"}, "severity": "critical", "window_seconds": 0.5},
                    {"name": "dead-letters", "kind": "gauge", "metric": "atrium_bus_dead_letters",
                     "threshold": 0},
                ],
            },
        }
    )  # fmt: skip
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium"
        ) as anonymous:
            assert (await anonymous.get("/v1/admin/alerts")).status_code == 401
        headers = {"authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium", headers=headers
        ) as client:
            first = (await client.get("/v1/admin/alerts")).json()
            assert first["firing"] == []
            replica = platform.alerts.engine.replica if platform.alerts is not None else None
            assert first["replica"] == replica  # the replica that evaluated (and answers)
            await platform.bus.publish(
                AlertFired(name="release", severity="critical", summary="m rolled back",
                           labels={"model": "m"})
            )  # fmt: skip
            [firing] = await _until(client, "firing")
            assert firing["rule"] == "release-rolled-back"
            assert firing["replica"] == replica
            assert firing["labels"] == {"name": "release", "model": "m"}
            [resolved] = await _until(client, "resolved")  # the event left the window
            assert resolved["rule"] == "release-rolled-back"
            metrics = (await client.get("/metrics")).text
            assert "atrium_bus_dead_letters 0.0" in metrics
            assert 'atrium_bus_stream_length{topic="alert.fired"}' in metrics
    finally:
        await platform.close()
