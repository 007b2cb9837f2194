"""The admin console's people, usage, knowledge, workflow, audit and health pages in a real
browser (Debian's chromium driven by playwright-core) against a real ``atrium serve``.

What the pages show is made for real first through the API: a key that chats with the
bundled model (usage), a knowledge base with an unreadable upload (a failed document and
its reason), a published workflow that ran. The browser then signs in, creates a user
(after the form refuses a blank one and the server a taken name) and a team, and reads
every page; the audit log must show the user's creation. Someone signs in once with an
OpenID Connect provider on loopback (which binds their account to the provider's subject);
the browser opens that user's sign-in identities with the keyboard and unbinds them.
Screenshots go to ``tests/e2e/artifacts/ui/`` (kept by CI, ignored by git).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RemoteAtriumServer
from tests.e2e.ui_harness import (
    ARTIFACTS,
    browser_ready,  # noqa: F401 - the fixture, used by name below
    run_browser,
    server_env,  # noqa: F401 - the fixture, used by the server fixture
)
from tests.integration.users.oidc_provider import FakeProvider, Identity, running

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
# The provider's client secret, by its name in the secret store.
OIDC_SECRET = "oidc-client"
PROVIDER_START_S = 30.0
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


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """An OpenID Connect provider on loopback for the module, in a thread of its own (the
    server asks it for its discovery document, keys and tokens)."""
    fake = FakeProvider()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        async with running(fake):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(PROVIDER_START_S), "the OpenID Connect provider did not start"
        yield fake
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(PROVIDER_START_S)
        loop.close()


@pytest.fixture(scope="module")
def server_config(provider: FakeProvider) -> dict[str, Any]:
    """Sign-in with the provider next to passwords."""
    oidc = {"enabled": True, "issuer": provider.url, "client_id": provider.client_id,
            "client_secret_secret": OIDC_SECRET}  # fmt: skip
    return {"web": {"oidc": oidc}}


def _sign_in_with_provider(server: RemoteAtriumServer, provider: FakeProvider) -> None:
    """What a browser does on "Sign in with ...": the first sign-in creates the user and binds
    the account to the provider's subject."""
    with server.http() as http:
        put = http.put(f"/v1/admin/secrets/{OIDC_SECRET}", json={"value": provider.client_secret})
        assert put.status_code == 200, put.text
    with server.http(api_key="") as browser, httpx.Client() as outside:
        out = browser.get("/v1/auth/oidc/login", params={"next": "/chat"})
        assert out.status_code == 302, out.text
        back = outside.get(out.headers["location"])
        assert back.status_code == 302, back.text
        signed = browser.get(back.headers["location"])
        assert signed.status_code == 303, signed.text


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
        "SSO_USER": Identity.email,
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
    server: RemoteAtriumServer, provider: FakeProvider
) -> None:
    tokens = _prepare(server)
    _sign_in_with_provider(server, provider)
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
    # The provider's user: the subject bound at their sign-in listed (opened with the keyboard),
    # then unbound after a confirmation that names the provider; the list says none is left.
    host = provider.url.removeprefix("http://")
    assert seen["identitiesExpanded"] == "true"
    [identity] = seen["identityRows"]
    assert identity[:2] == [f"{host} {provider.url}", Identity.sub]
    assert seen["unbindQuestion"].startswith(f"Unbind {Identity.email} from {host}?")
    assert seen["unbound"] == f"Unbound 1 sign-in identity from {Identity.email}."
    assert seen["focusAfterUnbind"] == "status"
    assert seen["identitiesLeft"] == f"No identity provider is bound to {Identity.email}."
    sso_user = users[Identity.email]
    with server.http() as http:
        left = http.get(f"/v1/admin/users/{sso_user['id']}/identities")
    assert left.status_code == 200, left.text
    assert left.json()["data"] == []
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
                 "50-admin-key-with-team", "51-admin-user-identities"):  # fmt: skip
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0
