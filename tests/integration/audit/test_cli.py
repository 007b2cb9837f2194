"""``atrium keys ...`` changes are audited; ``atrium audit verify`` finds rows cut off the end.

Both on a real SQLite store through the real CLI (typer's runner).
"""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from atrium.cli import app
from atrium.store.audit import AuditEntry, AuditFilter, AuditRepository
from atrium.store.db import Database

pytestmark = pytest.mark.integration


def _database(data_dir: Path) -> Database:
    return Database(f"sqlite+aiosqlite:///{data_dir / 'atrium.db'}")


def _entries(data_dir: Path) -> list[AuditEntry]:
    async def read() -> list[AuditEntry]:
        db = _database(data_dir)
        try:
            return await AuditRepository(db).query(AuditFilter(limit=1000))
        finally:
            await db.close()

    return asyncio.run(read())


def _cut_from(data_dir: Path, seq: int) -> None:
    async def cut() -> None:
        db = _database(data_dir)
        try:
            async with db.engine.begin() as conn:
                await conn.execute(text("DELETE FROM audit_log WHERE seq >= :s"), {"s": seq})
        finally:
            await db.close()

    asyncio.run(cut())


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ATRIUM_DATA_DIR", str(tmp_path))
    return tmp_path


def test_key_changes_made_in_the_store_are_audited_as_the_os_user(store: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "ci", "--scope", "admin", "--no-cache"])
    assert made.exit_code == 0, made.output
    secret = made.output.split()[-1]
    assert secret.startswith("atr-")
    [key_id] = [e.target.rsplit("/", 1)[1] for e in _entries(store)]
    assert runner.invoke(app, ["keys", "cache", key_id, "on"]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    unknown = runner.invoke(app, ["keys", "revoke", "no-such-key"])
    assert unknown.exit_code != 0
    teamless = runner.invoke(app, ["keys", "create", "x", "--team", "ghosts"])
    assert teamless.exit_code != 0

    entries = _entries(store)
    assert [(e.action, e.target, e.outcome) for e in entries] == [
        ("cli keys create", f"/v1/admin/keys/{key_id}", "success"),
        ("cli keys cache", f"/v1/admin/keys/{key_id}", "success"),
        ("cli keys revoke", f"/v1/admin/keys/{key_id}", "success"),
        ("cli keys revoke", "/v1/admin/keys/no-such-key", "rejected"),
        ("cli keys create", "/v1/admin/keys", "rejected"),
    ]
    assert {(e.actor, e.address) for e in entries} == {(f"cli:{getpass.getuser()}", "local")}
    assert entries[0].detail == {"key_name": "ci", "team": None, "scopes": ["admin"]}
    assert entries[1].detail == {"cache": True}
    assert "no-such-key" in entries[3].detail["error"]
    assert entries[4].detail == {
        "key_name": "x", "team": "ghosts", "scopes": ["inference"], "error": "no team 'ghosts'"
    }  # fmt: skip
    assert secret not in json.dumps([e.to_public() for e in entries])  # never the secret
    # The CLI's entries can be found like the API's: by target, by outcome.
    only = runner.invoke(app, ["audit", "export", "--target", f"/v1/admin/keys/{key_id}"])
    refused = runner.invoke(app, ["audit", "export", "--outcome", "rejected"])
    assert [json.loads(line)["seq"] for line in only.output.splitlines()] == [1, 2, 3]
    assert [json.loads(line)["seq"] for line in refused.output.splitlines()] == [4, 5]


def test_verify_finds_rows_cut_off_the_end_against_a_head_or_an_export(
    store: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    for name in ("a", "b", "c", "d"):
        assert runner.invoke(app, ["keys", "create", name]).exit_code == 0
    intact = runner.invoke(app, ["audit", "verify"])
    exported = runner.invoke(app, ["audit", "export"])
    export = tmp_path / "export.jsonl"
    export.write_text(exported.output)
    head = _entries(store)[-1]
    assert intact.exit_code == 0
    assert f"--expect-seq 4 --expect-hash {head.hash}" in intact.output
    expect = ["--expect-seq", "4", "--expect-hash", head.hash]
    assert runner.invoke(app, ["audit", "verify", *expect]).exit_code == 0
    assert runner.invoke(app, ["audit", "verify", "--against", str(export)]).exit_code == 0

    _cut_from(store, 3)

    alone = runner.invoke(app, ["audit", "verify"])
    by_head = runner.invoke(app, ["audit", "verify", *expect])
    by_export = runner.invoke(app, ["audit", "verify", "--against", str(export)])
    half = runner.invoke(app, ["audit", "verify", "--expect-seq", "4"])
    assert alone.exit_code == 0  # what is left is a valid chain
    for broken in (by_head, by_export):
        assert broken.exit_code == 1
        assert "broken at seq 3" in broken.output
        assert "rows 3 to 4 are missing" in broken.output
    assert half.exit_code != 0
    assert "go together" in half.output


def test_a_team_created_in_the_store_is_audited(store: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["teams", "create", "research", "--rpm", "60"])
    again = runner.invoke(app, ["teams", "create", "research"])  # the name is taken
    assert made.exit_code == 0, made.output
    assert again.exit_code != 0

    first, second = _entries(store)
    team_id = made.output.strip().rsplit("(", 1)[1].rstrip(")")
    assert (first.action, first.target, first.outcome) == (
        "cli teams create", f"/v1/admin/teams/{team_id}", "success"
    )  # fmt: skip
    assert first.detail == {"team_name": "research", "rpm": 60, "tpm": None, "budget_usd": None}
    assert (second.target, second.outcome) == ("/v1/admin/teams", "rejected")
    assert second.actor == f"cli:{getpass.getuser()}"
