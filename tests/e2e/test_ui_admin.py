"""The admin console's people, usage, knowledge, workflow, audit and health pages in a real
browser (Debian's chromium driven by playwright-core) against a real ``atrium serve``.

What the pages show is made for real first through the API: a key that chats with the
bundled model (usage), a knowledge base with an unreadable upload (a failed document and
its reason), a published workflow that ran. The browser then signs in, creates a user
(after the form refuses a blank one and the server a taken name) and a team, and reads
every page; the audit log must show the user's creation. Screenshots go to
``tests/e2e/artifacts/ui/`` (kept by CI, ignored by git).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import RemoteAtriumServer
from tests.e2e.ui_harness import (
    ARTIFACTS,
    browser_ready,  # noqa: F401 - the fixture, used by name below
    run_browser,
    server_env,  # noqa: F401 - the fixture, used by the server fixture
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_S = 180
KEY_NAME = "usage-key"
KB_NAME = "handbook"
BAD_FILE = "broken.txt"
BINARY = bytes(range(32)) * 8 + b"\xff\xfe\x00\x00"
WORKFLOW = "doubler"
PAGED = "paged"
PAGED_RUNS = 51
RUNS_PAGE = 50
NEW_USER = "console-made"
NEW_PASSWORD = "console-made-password"
TEAM_NAME = "search"
# Refused on purpose: creating a user with the taken name.
DELIBERATE = ("status of 409 (Conflict)", "HTTP 409 /v1/admin/users")
DOUBLER: dict[str, Any] = {
    "name": WORKFLOW,
    "inputs": {"x": {"type": "integer"}},
    "nodes": [
        {"id": "start", "type": "start"},
        {
            "id": "double",
            "type": "transform",
            "config": {
                "expressions": {"doubled": "sum([inputs.x, inputs.x])"},
                "output_types": {"doubled": "integer"},
            },
        },
        {"id": "end", "type": "end", "config": {"outputs": {"doubled": {"type": "integer"}}}},
    ],
    "edges": [
        {"source": "start", "source_handle": "x", "target": "double", "target_handle": "data"},
        {
            "source": "double",
            "source_handle": "doubled",
            "target": "end",
            "target_handle": "doubled",
        },
    ],
}


def _prepare(server: RemoteAtriumServer) -> int:
    """Usage, a failed document and a finished run, made through the API; the tokens used."""
    key = server.create_key(name=KEY_NAME)
    with server.get_client(api_key=key["key"]) as client:
        reply = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    assert reply.usage is not None
    with server.http() as http:
        made = http.post("/v1/knowledge-bases", json={"name": KB_NAME})
        assert made.status_code == 201, made.text
        upload = http.post(
            f"/v1/knowledge-bases/{KB_NAME}/documents", files={"file": (BAD_FILE, BINARY)}
        )
        assert upload.status_code == 400, upload.text
        assert upload.json()["error"]["code"] == "document_failed"
        workflow = http.post("/v1/workflows", json=DOUBLER)
        assert workflow.status_code == 201, workflow.text
        assert http.post(f"/v1/workflows/{WORKFLOW}/publish", json={}).status_code == 201
        run = http.post(f"/v1/workflows/{WORKFLOW}/runs", json={"inputs": {"x": 21}})
        assert run.status_code == 200, run.text
        assert run.json()["outputs"] == {"doubled": 42}
        # More runs than the console's first page holds (RUNS_PAGE in ui/src/admin/runs.ts).
        assert http.post("/v1/workflows", json={**DOUBLER, "name": PAGED}).status_code == 201
        assert http.post(f"/v1/workflows/{PAGED}/publish", json={}).status_code == 201
        for x in range(PAGED_RUNS):
            paged = http.post(f"/v1/workflows/{PAGED}/runs", json={"inputs": {"x": x}})
            assert paged.status_code == 200, paged.text
    return reply.usage.total_tokens


def _browse(server: RemoteAtriumServer) -> dict[str, Any]:
    env = {
        "KEY_NAME": KEY_NAME,
        "KB_NAME": KB_NAME,
        "BAD_FILE": BAD_FILE,
        "WORKFLOW": WORKFLOW,
        "NEW_USER": NEW_USER,
        "NEW_PASSWORD": NEW_PASSWORD,
        "TEAM_NAME": TEAM_NAME,
    }
    return run_browser(
        server,
        "admin.mjs",
        name="the admin console scenario",
        timeout_s=TIMEOUT_S,
        env=env,
        expected=DELIBERATE,
    )


@pytest.mark.usefixtures("browser_ready")
def test_the_admin_console_manages_people_and_shows_usage_knowledge_runs_audit_and_health(
    server: RemoteAtriumServer,
) -> None:
    tokens = _prepare(server)
    seen = _browse(server)

    # Users: the form refused a blank user without sending it, the server a taken name
    # (shown beside the username), then made the new one.
    assert seen["localUsernameError"] == "Give the user a username."
    assert "characters" in seen["localPasswordError"]
    assert seen["usernameInvalid"] == "true"
    assert seen["sentWhenInvalid"] == 0  # nothing was sent while the form was invalid
    assert "taken" in seen["serverUsernameError"] or "exists" in seen["serverUsernameError"]
    assert seen["userRow"][:2] == [NEW_USER, "Console Made"]
    assert seen["userRole"] == "builder"
    with server.http() as http:
        users = {u["username"]: u for u in http.get("/v1/admin/users").json()["data"]}
        teams = {t["name"]: t for t in http.get("/v1/admin/teams").json()["data"]}
    assert users[NEW_USER]["role"] == "builder"
    # Teams: a budget needs its period (checked in the browser); then the team exists.
    assert "period" in seen["budgetPeriodError"]
    assert seen["teamRow"][:4] == [TEAM_NAME, "60", "—", "$25 / month"]
    assert (teams[TEAM_NAME]["rpm"], teams[TEAM_NAME]["budget_period"]) == (60, "month")

    # A key of the team with its own limits and budget (a bad number refused in the browser).
    assert "whole number" in seen["keyRpmError"]
    assert seen["keySecretShown"]
    assert seen["keyRow"][3:5] == [TEAM_NAME, "inference"]
    assert seen["keyRow"][5] == "30 rpm, $5/day"

    # Usage by key and day: the key's chat is counted on today's row.
    headers = seen["usageHeaders"]
    assert headers[0] == "Day"
    assert headers[-1] == "Total"
    column = headers.index(KEY_NAME)
    assert int(seen["usageRows"][-1][column].replace(",", "")) >= tokens
    assert seen["usageChart"] >= 1

    # The knowledge base's failed upload, with its reason; the uploads source re-synced.
    assert seen["failedRow"][:2] == [BAD_FILE, "uploads"]
    assert "binary data" in seen["failedRow"][2]
    assert seen["sourceRow"][:3] == ["uploads", "folder", "Ok"]
    assert seen["resync"].startswith("Synced")

    # Workflow runs: the newest page, then the rest with "Load more" (pressed with the
    # keyboard), each run once, newest first, as the API lists them.
    with server.http() as http:
        every = http.get("/v1/workflows/runs", params={"limit": 500}).json()["data"]
    assert len(every) == PAGED_RUNS + 1
    assert seen["firstPageRows"] == RUNS_PAGE
    assert seen["firstPageStatus"] == f"{RUNS_PAGE} runs, older ones follow"
    assert seen["allRunIds"] == [f"Open run {r['id']}" for r in every]
    assert seen["loadMoreLeft"] == 0
    # Workflow runs filtered by workflow; the trace of the run, block by block.
    [run] = seen["runRows"]
    assert run[1] == f"{WORKFLOW} v1"
    assert run[2] == "Succeeded"
    assert seen["noFailedRuns"]
    assert seen["traceNodes"] == ["start", "double", "end"]
    assert '"doubled": 42' in seen["doubleOutputs"]

    # The audit log, newest first: the console's user creation, then the refused attempt.
    created, refused = seen["auditRows"][:2]
    assert created[1:] != refused[1:]
    assert created[3:5] == ["POST /v1/admin/users", "/v1/admin/users"]
    assert created[-1] == "Success"
    assert created[2] == "admin (web)"
    assert refused[-1] == "Rejected"

    # System health: the server, the store and the bundled model.
    assert "Ready" in seen["healthFacts"]
    assert ["smollm2-135m", "Ready"] in [row[:2] for row in seen["modelRows"]]
    assert seen["alertsEmpty"] == 1

    # Starting an experiment: the same model twice is refused before sending.
    assert seen["experimentArmError"] == "Arm B must be a different model from arm A."
    for name in ("40-admin-user-error", "41-admin-users", "42-admin-teams", "43-admin-usage-by-key",
                 "44-admin-knowledge-base", "45-admin-workflow-runs", "46-admin-workflow-run-trace",
                 "47-admin-audit-log", "48-admin-health", "49-admin-experiment-form",
                 "50-admin-key-with-team"):  # fmt: skip
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0
