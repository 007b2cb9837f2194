"""``atrium audit verify|export`` as a subprocess on a store written by the real admin API."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration._gateway import gateway_client

pytestmark = pytest.mark.e2e

ATRIUM = Path(sys.executable).with_name("atrium")
ADMIN_KEY = "atr-" + "b" * 40
CLI_TIMEOUT_S = 120.0


async def _admin_calls(data_dir: Path) -> None:
    """Three admin calls through the real app; closing the platform writes their entries."""
    config = {"models": {}, "workflows": {"enabled": False}}
    async with gateway_client(data_dir, ADMIN_KEY, config) as client:
        for name in ("red", "green", "blue"):
            created = await client.post("/v1/admin/teams", json={"name": name})
            assert created.status_code == 201


def _atrium(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ATRIUM), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def test_verify_proves_the_chain_then_names_the_tampered_row(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    await _admin_calls(data_dir)
    config = tmp_path / "atrium.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data_dir)}))

    intact = _atrium(config, "audit", "verify")
    exported = _atrium(config, "audit", "export", "--action", "POST /v1/admin/teams")

    assert intact.returncode == 0, intact.stderr
    assert "audit chain intact: 3 entries verified" in intact.stdout
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3]
    assert {line["outcome"] for line in lines} == {"success"}

    with sqlite3.connect(data_dir / "atrium.db") as db:
        db.execute("UPDATE audit_log SET outcome = 'denied' WHERE seq = 2")

    broken = _atrium(config, "audit", "verify")

    assert broken.returncode == 1
    assert f"broken at seq 2 (id {lines[1]['id']})" in broken.stderr
    assert "the row was altered" in broken.stderr
    assert "Traceback" not in broken.stderr
