"""``atrium keys create --cache/--no-cache`` and ``atrium keys cache`` on a real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atrium.cli import app
from atrium.store.db import Database
from atrium.store.keys import ApiKey, ApiKeyRepository

pytestmark = pytest.mark.integration


def _keys(data_dir: Path) -> dict[str, ApiKey]:
    async def read() -> dict[str, ApiKey]:
        db = Database(f"sqlite+aiosqlite:///{data_dir / 'atrium.db'}")
        try:
            return {key.name: key for key in await ApiKeyRepository(db).list()}
        finally:
            await db.close()

    return asyncio.run(read())


def test_a_keys_cache_choice_is_set_at_creation_and_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATRIUM_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    for name, flag in (("on", ["--cache"]), ("off", ["--no-cache"]), ("unset", [])):
        made = runner.invoke(app, ["keys", "create", name, *flag])
        assert made.exit_code == 0, made.output
    keys = _keys(tmp_path)
    assert (keys["on"].cache, keys["off"].cache, keys["unset"].cache) == (True, False, None)

    for choice, expected in (("off", False), ("on", True), ("default", None)):
        changed = runner.invoke(app, ["keys", "cache", keys["unset"].id, choice])
        assert changed.exit_code == 0, changed.output
        assert f"cache {choice}" in changed.output
        assert _keys(tmp_path)["unset"].cache is expected

    assert runner.invoke(app, ["keys", "cache", keys["on"].id, "maybe"]).exit_code == 2
    missing = runner.invoke(app, ["keys", "cache", "nope", "on"])
    assert missing.exit_code == 1
    assert "no API key" in missing.output
