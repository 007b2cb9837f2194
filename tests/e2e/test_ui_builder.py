"""The workflow builder's editing, drafts and versions in a real browser (Debian's chromium
driven by playwright-core) against a real ``atrium serve``.

The browser builds a small workflow from the palette, copies and pastes a block, undoes and
redoes the paste, saves the draft with Ctrl+S, keeps an unsaved edit across a reload and an
expired session, publishes twice, compares the two versions, picks an upstream block's
output into an LLM block's prompt, searches the template gallery and starts from a template
with its parameters, answers a run's approval from the run view, and imports a large
workflow, which is fitted into view once. What the server holds is checked through the API.
Screenshots go to ``tests/e2e/artifacts/ui/`` (kept by CI, ignored by git).
"""

from __future__ import annotations

from typing import Any

import pytest

from atrium.workflows.templates import TemplateLibrary
from tests.e2e.conftest import RemoteAtriumServer
from tests.e2e.ui_harness import (
    ARTIFACTS,
    browser_ready,  # noqa: F401 - the fixture, used by name below
    run_browser,
    server_env,  # noqa: F401 - the fixture, used by the server fixture
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_S = 180
WORKFLOW = "ui-builder"
APPROVAL_WORKFLOW = "ui-approve"
APPROVAL: dict[str, Any] = {
    "name": APPROVAL_WORKFLOW,
    "inputs": {"amount": {"type": "number"}},
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "gate", "type": "approval", "config": {"message": "Pay {{ value }}?"}},
        {"id": "paid", "type": "transform", "config": {"expressions": {"ok": "`true`"}}},
    ],
    "edges": [
        {"source": "start", "source_handle": "amount", "target": "gate", "target_handle": "value"},
        {"source": "gate", "source_handle": "approved", "target": "paid"},
    ],
    "outputs": {"paid": {"source": "paid.ok"}},
}
# Provoked on purpose: the session's cookies are cleared, and the builder's next requests
# are refused until the user signs in again.
DELIBERATE = ("HTTP 401 /v1/workflows/",)


def _browse(server: RemoteAtriumServer) -> dict[str, Any]:
    env = {
        "WORKFLOW_NAME": WORKFLOW,
        "APPROVAL_WORKFLOW": APPROVAL_WORKFLOW,
    }
    return run_browser(
        server,
        "builder.mjs",
        name="the builder scenario",
        timeout_s=TIMEOUT_S,
        env=env,
        expected=DELIBERATE,
    )


@pytest.mark.usefixtures("browser_ready")
def test_the_builder_copies_undoes_keeps_drafts_publishes_versions_and_picks_variables(
    server: RemoteAtriumServer,
) -> None:
    with server.http() as http:
        assert http.post("/v1/workflows", json=APPROVAL).status_code == 201
        assert http.post(f"/v1/workflows/{APPROVAL_WORKFLOW}/publish", json={}).status_code == 201
    seen = _browse(server)

    # Built from the palette and wired: three blocks, two edges, no problems.
    assert seen["built"] == ["start", "end", "transform"]
    assert seen["builtEdges"] == 2

    # Copy and paste: a fresh id, selected, with the config (its output port); undo, redo.
    assert seen["copiedNotice"] == "Copied 1 block."
    assert seen["afterPaste"] == ["start", "end", "transform", "transform_2"]
    assert seen["pastedSelected"] is True
    assert seen["afterUndo"] == ["start", "end", "transform"]
    assert seen["afterRedo"] == ["start", "end", "transform", "transform_2"]
    assert "Paste blocks" in seen["shortcuts"]
    assert "Save the draft to the server" in seen["shortcuts"]

    # A drag: the block follows the pointer while the graph (and its draft) waits for the
    # drop; the drop is one step to undo.
    # (React Flow starts the drag on the first of the ten moves: 9 of 10 are followed.)
    assert seen["dragShownMidway"] == [108, 36]
    assert seen["draftMidway"] == seen["dragFrom"]
    assert seen["dragTo"]["x"] > seen["dragFrom"]["x"]
    assert seen["dragTo"]["y"] > seen["dragFrom"]["y"]
    assert seen["afterDragUndo"] == seen["dragFrom"]

    # The draft: saved to the server with Ctrl+S, an unsaved edit kept across a reload.
    assert seen["statusBeforeSave"].startswith("Unsaved changes")
    assert seen["statusSaved"] == "Draft saved · not published"
    assert seen["restoredNotice"] == "Your draft was restored from this browser."
    assert seen["afterReload"] == ["start", "end", "transform"]
    assert seen["edgesAfterReload"] == 2
    assert seen["nameAfterReload"] == WORKFLOW
    assert seen["statusAfterReload"].startswith("Unsaved changes")
    assert seen["keptExpressions"] == {"shout": "data | upper", "size": "data | length"}

    # An expired session: to sign in and back, the edit made as it expired still there.
    assert "expired=1" in seen["expiredUrl"]
    assert seen["expressionsAfterSignIn"] == {
        "shout": "data | upper",
        "size": "data | length",
        "same": "data",
    }

    # Published twice; a run waits for the second publish; the diff names what changed.
    assert seen["firstPublish"] == "v1 published"
    assert seen["runBlockedWhy"].startswith("Runs use the published version")
    assert seen["secondPublish"] == "v2 published"
    assert seen["versions"] == [2, 1]
    assert seen["diffDefaults"] == ["1", "2"]
    assert seen["diffTitle"] == "From v1 to v2"
    assert "transform (config)" in seen["diffSummary"]
    assert "-      shout: data | upper" in seen["diffUnified"]
    assert "+      shout: data | lower" in seen["diffUnified"]

    # The variable picker: upstream outputs (not Start's, which are the inputs) and the
    # workflow's inputs; the pick goes in at the caret as a template reference.
    assert seen["variableTarget"] == "Prompt"
    assert seen["variables"][:3] == [
        "nodes.transform.shout",
        "nodes.transform.size",
        "nodes.transform.same",
    ]
    assert "inputs.text" in seen["variables"]
    assert seen["promptAfterPick"] == "Say: {{ nodes.transform.shout }}"
    assert seen["promptInDraft"] == "Say: {{ nodes.transform.shout }}"

    # The template gallery: a card per template of the library, with its category, blocks
    # and parameters; searched by block type, narrowed by category, an empty result with a
    # way back; Escape closes it and the focus returns to the toolbar's button.
    library = TemplateLibrary.bundled().list()
    assert sorted(seen["galleryTemplates"]) == sorted(t.id for t in library)
    assert seen["galleryFocus"] == "wf-gallery-search"
    categories = {t.meta.category for t in library}
    assert seen["galleryCategories"][0] == f"All {len(library)}"
    assert {c.split()[0].lower() for c in seen["galleryCategories"][1:]} == categories
    assert seen["galleryCard"]["title"] == "Document Q&A"
    assert seen["galleryCard"]["blocks"] == ["retrieve", "llm"]
    assert "Research" in seen["galleryCard"]["meta"]
    qa = next(t for t in library if t.id == "document-qa")
    assert f"{len(qa.meta.parameters)} parameters" in seen["galleryCard"]["meta"]
    uses_analysis = sorted(t.id for t in library if "analyze_document" in t.blocks())
    assert sorted(seen["gallerySearch"]) == uses_analysis
    assert seen["galleryRisk"] == [
        t.id for t in library if t.id in uses_analysis and t.meta.category == "risk"
    ]
    assert seen["galleryCount"] == f"{len(seen['galleryRisk'])} of {len(library)} templates"
    assert seen["galleryNoMatch"] == "No template matches “nothing is called this” in Risk."
    assert seen["galleryCleared"] == len(library)
    assert seen["galleryFocusBack"] is True

    # A template chosen from the gallery with the keyboard; its parameters in a form, their
    # defaults filled in; the values typed are used with their types (top_k a number).
    assert seen["templateChosenByKeyboard"] is True
    assert seen["templateDefaults"] == {"knowledge_base": "docs", "top_k": "4"}
    assert seen["templateNotice"] == "Started from the template Document Q&A."
    assert seen["templateName"] == "document-qa"
    assert seen["templateRetrieve"] == {"knowledge_base": "handbook", "top_k": 2}

    # The run form refuses an empty required input before sending. An approval answered
    # from the run view: the block waits with its message, the
    # decision (with a comment) lets the run finish.
    assert seen["emptyInputError"] == "Give this input a value to run."
    assert seen["emptyInputInvalid"] == "true"
    assert seen["sentWhenEmpty"] == 0
    assert seen["approvalMessage"] == "Pay 10?"
    assert seen["gateStatusWaiting"] == "Waiting"
    assert seen["approvalRunStatus"] == "succeeded"
    assert seen["approvalRunOutputs"] == {"paid": True}
    assert seen["cardsLeft"] == 0

    # A large import is fitted into the canvas once React Flow has measured its blocks
    # (zoomed out, not below React Flow's floor, its first and last blocks in view), and only once:
    # the user's pan after it and a change to the graph do not fit it again.
    before, fitted, panned = seen["viewBeforeImport"], seen["viewAfterImport"], seen["viewAfterPan"]
    assert fitted["zoom"] < before["zoom"]
    assert 0.5 <= fitted["zoom"] < 1
    assert fitted["firstInside"] is True
    assert fitted["lastInside"] is True
    assert panned["zoom"] == fitted["zoom"]
    moved = (panned["x"] - fitted["x"], panned["y"] - fitted["y"])  # as dragged: (-100, 60)
    assert abs(moved[0] + 100) < 15, moved
    assert abs(moved[1] - 60) < 15, moved
    # The approval run's status was on screen; the imported graph starts with none of it.
    assert seen["runStatusBeforeImport"] == 1
    assert seen["runStatusAfterImport"] == 0

    # The server holds both versions and the draft the builder saved.
    with server.http() as http:
        saved = http.get(f"/v1/workflows/{WORKFLOW}").json()
        diff = http.get(f"/v1/workflows/{WORKFLOW}/diff", params={"from": 1, "to": 2}).json()
    assert saved["published_version"] == 2
    transform = next(n for n in saved["draft"]["nodes"] if n["id"] == "transform")
    assert transform["config"]["expressions"]["shout"] == "data | lower"
    assert diff["nodes_changed"] == {"transform": ["config"]}
    with server.http() as http:
        [run] = http.get("/v1/workflows/runs", params={"workflow": APPROVAL_WORKFLOW}).json()[
            "data"
        ]
        gate = next(
            n
            for n in http.get(f"/v1/workflows/runs/{run['id']}").json()["nodes"]
            if n["node_id"] == "gate"
        )
    assert (gate["outputs"]["decision"], gate["outputs"]["comment"]) == ("approved", "fine by me")
    for name in ("60-builder-shortcuts", "61-builder-version-diff", "62-builder-variable-picker",
                 "63-builder-template", "63-builder-template-gallery",
                 "63-builder-template-gallery-empty", "64-builder-approval",
                 "65-builder-large-import"):  # fmt: skip
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0
