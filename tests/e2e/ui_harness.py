"""What the browser tests share: where Chromium, the built UI and the screenshots are, the
first admin's password, the check that the browser can run, and the run of one Node
scenario script (``tests/e2e/ui/*.mjs``, on ``harness.mjs``) whose JSON observations come
back with every console or HTTP error the page saw, none of them unexpected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RemoteAtriumServer

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "e2e" / "ui"
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts" / "ui"
UI_DIST = ROOT / "atrium" / "ui_dist" / "index.html"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PASSWORD = "e2e-admin-password"
# Chromium reports every non-2xx fetch as a console error; the 401s of the signed-out
# checks and the wrong-password attempt are expected, nothing else is.
EXPECTED_CONSOLE = ("status of 401", "HTTP 401 /v1/auth/me", "HTTP 401 /v1/auth/login")


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """The first admin's password is given (not generated); argon2 kept cheap."""
    return {
        "ATRIUM_WEB__ADMIN_PASSWORD": PASSWORD,
        "ATRIUM_WEB__PASSWORD_TIME_COST": "1",
        "ATRIUM_WEB__PASSWORD_MEMORY_KIB": "8192",
    }


@pytest.fixture(scope="module")
def browser_ready() -> None:
    """Fail with what to run when the browser, playwright-core or the built UI is missing."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (make chromium)")
    if not (ROOT / "ui" / "node_modules" / "playwright-core").is_dir():
        missing.append("ui/node_modules (make ui)")
    if not UI_DIST.is_file():
        missing.append(f"{UI_DIST} (make ui)")
    if shutil.which("node") is None:
        missing.append("node (Node.js 20 or later)")
    if missing:
        pytest.fail("the browser tests need: " + ", ".join(missing))


def run_browser(
    server: RemoteAtriumServer,
    script: str,
    *leading: str,
    name: str,
    timeout_s: float,
    env: dict[str, str] | None = None,
    expected: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``node SCRIPT [LEADING...] BASE_URL ARTIFACTS`` as the first admin: its observations.

    The test fails with the script's output when it fails; ``expected`` names the error
    lines (besides the 401s) the scenario provokes on purpose.
    """
    done = subprocess.run(  # noqa: PLW1510 - the return code is checked below
        ["node", str(SCRIPTS / script), *leading, server.url_root, str(ARTIFACTS)],
        env={
            **os.environ,
            "UI_USERNAME": "admin",
            "UI_PASSWORD": PASSWORD,
            "CHROMIUM": str(CHROMIUM),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        pytest.fail(f"{name} failed:\n{done.stderr}\n{done.stdout}")
    seen: dict[str, Any] = json.loads(done.stdout)
    unexpected = [
        line
        for line in seen.pop("consoleErrors")
        if not any(e in line for e in (*EXPECTED_CONSOLE, *expected))
    ]
    assert unexpected == [], unexpected
    return seen
