"""The web UI in a real browser: Debian's chromium driven by playwright-core (Node)
against a real ``atrium serve`` with the bundled model.

pytest owns the server (the shared ``server`` fixture: its own data directory, the
check that it logged no traceback, a clean SIGTERM stop); each scenario runs as one
Node process (``tests/e2e/ui/browser.mjs``), because playwright-core is a Node
library, and reports what it saw as JSON for the assertions here. Screenshots of
every screen go to ``tests/e2e/artifacts/ui/`` (kept by CI, ignored by git).
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from atrium.runtime.backends.llamacpp import bundled_gguf
from tests.e2e.conftest import RemoteAtriumServer
from tests.e2e.ui_harness import (
    ARTIFACTS,
    UI_DIST,
    browser_ready,  # noqa: F401 - the fixture, used by name below
    run_browser,
    server_env,  # noqa: F401 - the fixture, used by the server fixture
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    """A release policy for the bundled model, so the admin console has a release to show."""
    return {
        "registry": {"source_roots": [str(bundled_gguf().parent)]},
        "releases": {
            "policies": {
                "smol": {
                    "public_name": "smol",
                    "gates": None,
                    "deployment": {"replicas": {"min": 1, "max": 1}, "context_length": 512},
                }
            }
        },
    }


def run_scenario(
    server: RemoteAtriumServer,
    scenario: str,
    *,
    env: dict[str, str] | None = None,
    expected: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one scenario of ``browser.mjs``; its observations, or the test fails."""
    return run_browser(
        server,
        "browser.mjs",
        scenario,
        name=f"browser scenario {scenario!r}",
        timeout_s=SCENARIO_TIMEOUT_S,
        env=env,
        expected=expected,
    )


@pytest.mark.usefixtures("browser_ready")
def test_sign_in_chat_reload_and_sign_out(server: RemoteAtriumServer) -> None:
    seen = run_scenario(server, "chat")
    assert seen["model"]
    # The answer was on screen while it streamed, in several steps, then complete.
    assert seen["answer"], seen
    assert len(seen["streamTexts"]) >= 2, seen["streamTexts"]
    assert seen["answerHtml"].startswith("<")
    assert "<script" not in seen["answerHtml"].lower()
    assert seen["regenerateVisible"]
    assert seen["theme"] in ("dark", "light")
    # Kept on the server: a reload finds the conversation and the same answer.
    title = "List three fruits as a Markdown bullet list."
    assert seen["sidebar"] == [title]
    assert seen["afterReload"] == {"user": title, "answer": seen["answer"], "sidebar": [title]}
    assert seen["searchHits"] == [title]
    assert seen["searchMiss"]
    # Signing in again after the session ended leads back with the draft intact.
    assert seen["draftAfterSignIn"] == "A draft that must survive signing in again"
    assert seen["signedOut"]
    for name in ("01-login", "02-chat-empty", "03-chat-answer", "05-chat-reloaded"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0


@pytest.mark.usefixtures("browser_ready")
def test_a_wrong_password_shows_the_error(server: RemoteAtriumServer) -> None:
    seen = run_scenario(server, "wrong-password")
    assert seen["error"] == "Incorrect username or password."
    assert seen["url"].endswith("/login")


def test_the_ui_is_served_beside_the_api(server: RemoteAtriumServer) -> None:
    with server.http(api_key="") as http:
        page = http.get("/chat/some-id")
        unknown_api = http.get("/v1/no-such-route")
        me = http.get("/v1/auth/me")
    if UI_DIST.is_file():
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-cache"
        assert '<div id="root">' in page.text
    else:
        assert page.status_code == 503
        assert "make ui" in page.text
    assert unknown_api.status_code == 404
    assert unknown_api.json()["error"]["code"] == "unknown_route"
    assert me.status_code == 401


@pytest.mark.usefixtures("browser_ready")
def test_the_admin_console_shows_a_release_and_manages_a_key(server: RemoteAtriumServer) -> None:
    with server.http() as http:
        created = http.post("/v1/releases", json={"model": "smol", "uri": str(bundled_gguf())})
    assert created.status_code == 201, created.text
    release_id = created.json()["id"]
    key_name = "console-key"
    deliberate = (
        # Pausing the ended release (409) and scaling past the policy's maximum (400).
        "status of 409 (Conflict)",
        f"HTTP 409 /v1/releases/{release_id}/pause",
        "status of 400 (Bad Request)",
        "HTTP 400 /v1/deployments/smol-v1/scale",
    )
    env = {"RELEASE_ID": release_id, "KEY_NAME": key_name}
    seen = run_scenario(server, "admin", env=env, expected=deliberate)

    sections = [
        "Releases",
        "Deployments",
        "Models",
        "Experiments",
        "Users",
        "Teams",
        "API keys",
        "Usage",
        "Knowledge bases",
        "Workflow runs",
        "Audit log",
        "System health",
    ]
    assert seen["adminNav"] == sections
    assert seen["releaseRow"][:6] == [release_id, "smol", "1", "Succeeded", "Promoted", "100%"]
    stages = seen["timelineStages"]
    assert stages[0] == "Detected"
    assert stages[-1] == "Promoted"
    assert {"Registering", "Deploying", "Smoke testing"} <= set(stages)
    assert seen["releaseStage"] == "Promoted"
    assert seen["pauseError"] == f"release {release_id} has ended (succeeded); nothing to pause"
    assert seen["readyCount"].startswith("1 of 1 replicas ready")
    assert seen["replicaStates"] == ["Ready"]
    assert "between 1 and 1" in seen["scaleError"]
    [version] = seen["versionRows"]
    assert version[:2] == ["1", "production"]
    assert seen["experimentsEmpty"]
    # The web UI's session keys exist but are not listed among the API keys.
    assert "web session" in [k["name"] for k in server.list_keys()]
    assert sorted(seen["keyNames"]) == sorted(["bootstrap admin", key_name])
    assert not seen["secretStillShown"]

    # The secret read off the screen is a working key for the OpenAI client ...
    secret = seen["secret"]
    with server.get_client(api_key=secret) as client:
        assert "smol" in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.usage is not None
    # ... until it is revoked in the console.
    revoked = run_scenario(server, "admin-revoke", env=env)
    assert revoked["revoked"]
    with server.get_client(api_key=secret) as client, pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert revoked["usageHeaders"][0] == "Day"
    assert "smol" in revoked["usageHeaders"]
    assert revoked["usageHeaders"][-1] == "Total"
    smol = revoked["usageHeaders"].index("smol")
    assert int(revoked["usageRows"][-1][smol].replace(",", "")) >= reply.usage.total_tokens
    assert revoked["chartCanvas"] >= 1
    for name in ("10-admin-releases", "11-admin-release-timeline", "12-admin-deployments",
                 "13-admin-models", "14-admin-experiments", "15-admin-key-created",
                 "17-admin-key-revoked", "18-admin-usage"):  # fmt: skip
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0


@pytest.mark.usefixtures("browser_ready")
def test_the_admin_console_is_for_admins_only(server: RemoteAtriumServer) -> None:
    body = {"username": "plain-user", "password": "plain-user-password", "role": "user"}
    with server.http() as http:
        made = http.post("/v1/admin/users", json=body)
    assert made.status_code == 201, made.text
    env = {"UI_USERNAME": body["username"], "UI_PASSWORD": body["password"]}
    seen = run_scenario(server, "not-admin", env=env)
    assert seen["adminLinkInTopbar"] == 0
    assert "for administrators" in seen["text"]
    assert "user" in seen["text"]


@pytest.mark.usefixtures("browser_ready")
def test_build_publish_and_run_a_workflow_in_the_builder(server: RemoteAtriumServer) -> None:
    name = "ui-shout"
    seen = run_scenario(server, "workflow", env={"WORKFLOW_NAME": name})

    assert {"Start", "Transform", "End", "LLM", "Condition"} <= set(seen["palette"])
    # Delete removes the selected block; Ctrl+Z brings it back.
    assert (seen["afterDelete"], seen["afterUndo"], seen["emptied"]) == (1, 2, 0)
    assert seen["problemsBeforeWiring"], "the server's validation shows on the nodes"
    assert seen["refused"] == (
        'Connection refused: The control handle "done" carries no value for the input "result".'
    )
    assert seen["edges"] == 2
    assert seen["problemsAfterWiring"] == 0
    assert seen["saveStatus"] == "v1 published"
    # The run streamed every block's status, and the transform's record opens in the panel.
    assert seen["runStatus"] == "succeeded"
    assert seen["runOutputs"] == {"result": "HELLO BUILDER"}
    assert seen["nodeStatuses"] == dict.fromkeys(("start", "transform", "end"), "Succeeded")
    assert seen["transformInputs"] == {"data": "hello builder"}
    assert seen["transformOutputs"] == {"shout": "HELLO BUILDER"}
    assert seen["transformStatus"] == "succeeded"

    # What the builder saved is what the server holds and ran.
    with server.http() as http:
        saved = http.get(f"/v1/workflows/{name}").json()
        [run] = http.get("/v1/workflows/runs", params={"workflow": name}).json()["data"]
    assert saved["published_version"] == 1
    assert [n["type"] for n in saved["draft"]["nodes"]] == ["start", "transform", "end"]
    assert all(n["position"] for n in saved["draft"]["nodes"])
    assert saved["draft"]["inputs"]["text"]["type"] == "string"
    assert run["outputs"] == {"result": "HELLO BUILDER"}
    assert run["inputs"] == {"text": "hello builder"}
    for shot in ("20-workflow-builder", "21-workflow-run"):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 0


HANDBOOK = (
    "# Leave policy\n\n"
    "Every employee gets 30 days of paid annual leave. Unused days carry over "
    "until the end of March of the next year.\n"
)
MEMO = "Project memo: the code word for the launch is PELICAN.\n"


@pytest.mark.usefixtures("browser_ready")
def test_ask_a_knowledge_base_open_a_citation_rate_it_and_attach_a_document(
    server: RemoteAtriumServer,
) -> None:
    kb = "handbook"
    with server.http() as http:
        made = http.post("/v1/knowledge-bases", json={"name": kb, "description": "HR rules"})
        assert made.status_code == 201, made.text
        uploaded = http.post(
            f"/v1/knowledge-bases/{kb}/documents",
            files={"file": ("leave.md", HANDBOOK.encode(), "text/markdown")},
        )
        assert uploaded.status_code == 201, uploaded.text
    comment = "It should say when unused days expire."
    env = {
        "KB_NAME": kb,
        "KB_QUESTION": "How many days of paid leave does an employee get?",
        "KB_COMMENT": comment,
        "MEMO_TEXT": MEMO,
    }
    seen = run_scenario(server, "kb-chat", env=env)

    assert seen["answer"], seen
    assert seen["answerModel"] == f"rag/{kb}"
    # The passage beside the answer: its number, document, score and snippet.
    [citation] = seen["citations"]
    assert citation.startswith("[1]")
    assert "Leave policy" in citation or "leave.md" in citation
    assert "30 days of paid annual leave" in citation
    # Opened: the whole passage (not just the snippet).
    assert seen["drawerTitle"].startswith("[1]")
    assert "carry over until the end of March" in seen["drawerText"]
    # Thumbs down with a comment reached the knowledge base ...
    assert seen["feedbackStatus"] == 201
    assert "Not helpful" in seen["feedbackGiven"]
    with server.http() as http:
        stored = http.get(f"/v1/knowledge-bases/{kb}/feedback").json()["data"]
    assert [(f["rating"], f["comment"]) for f in stored] == [("down", comment)]
    assert stored[0]["query"] == env["KB_QUESTION"]
    # ... and the conversation keeps the sources, the rating and the knowledge base.
    assert seen["citationsAfterReload"] == seen["citations"]
    assert "Not helpful" in seen["feedbackAfterReload"]
    assert seen["kbAfterReload"] == kb

    # A document of a type the server cannot read is refused before it is sent; a memo
    # is read by the server and the next question is asked with its text.
    assert "photo.png" in seen["refusedAttachment"]
    assert seen["attachmentStatus"] == 201
    assert "memo.md" in seen["attachment"]
    assert seen["askedWithMemo"]
    assert seen["askedRoles"] == ["user", "user"]
    for name in ("30-chat-kb-answer", "31-chat-citation-open", "32-chat-kb-feedback",
                 "33-chat-attachment"):  # fmt: skip
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0
