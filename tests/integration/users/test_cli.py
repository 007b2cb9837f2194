"""``atrium users create-admin`` and ``set-password`` on a real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atrium.store.db import Database
from atrium.users.cli import users_app
from atrium.users.passwords import HashCost, Passwords
from atrium.users.repository import Role, UserRepository

pytestmark = pytest.mark.integration

CHEAP = {"ATRIUM_WEB__PASSWORD_TIME_COST": "1", "ATRIUM_WEB__PASSWORD_MEMORY_KIB": "8192"}


def _check(data_dir: Path, username: str, password: str) -> tuple[Role, bool]:
    async def look() -> tuple[Role, bool]:
        db = Database(f"sqlite+aiosqlite:///{data_dir / 'atrium.db'}")
        try:
            found = await UserRepository(db).credentials(username)
            assert found is not None
            verified = await Passwords(HashCost(1, 8192, 1)).verify(found[1], password)
            return found[0].role, verified
        finally:
            await db.close()

    return asyncio.run(look())


def test_create_admin_then_reset_a_forgotten_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATRIUM_DATA_DIR", str(tmp_path))
    for name, value in CHEAP.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    made = runner.invoke(users_app, ["create-admin", "Root", "--password", "root-password-1"])
    assert made.exit_code == 0, made.output
    assert "username: root" in made.output
    assert "root-password-1" not in made.output
    assert _check(tmp_path, "root", "root-password-1") == (Role.ADMIN, True)

    taken = runner.invoke(users_app, ["create-admin", "root", "--password", "other-password"])
    assert taken.exit_code == 1
    assert "taken" in taken.output

    reset = runner.invoke(users_app, ["set-password", "root"])
    assert reset.exit_code == 0, reset.output
    generated = reset.output.split("password: ")[1].split()[0]
    assert _check(tmp_path, "root", generated) == (Role.ADMIN, True)
    assert _check(tmp_path, "root", "root-password-1") == (Role.ADMIN, False)

    unknown = runner.invoke(users_app, ["set-password", "nobody"])
    assert unknown.exit_code == 1
    weak = runner.invoke(users_app, ["create-admin", "x", "--password", "short"])
    assert weak.exit_code == 1
    assert "at least 10 characters" in weak.output
