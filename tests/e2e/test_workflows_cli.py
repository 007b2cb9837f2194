"""``atrium workflows ...`` as a user runs it, against a running server."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RemoteAtriumServer, WaitUntil

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 30.0


def doubler(name: str, threshold: int = 40) -> str:
    """Doubles ``x``; says ``big`` above ``threshold``, else ``small`` (the other is skipped)."""
    return f"""\
name: {name}
description: Doubles x and says whether it is big.
inputs:
  x: {{type: integer}}
nodes:
  - {{id: start, type: start}}
  - id: double
    type: transform
    config:
      expressions: {{doubled: "sum([inputs.x, inputs.x])"}}
      output_types: {{doubled: integer}}
  - id: check
    type: condition
    config: {{expression: "value > `{threshold}`"}}
  - id: big
    type: transform
    config: {{expressions: {{label: "'big'"}}}}
  - id: small
    type: transform
    config: {{expressions: {{label: "'small'"}}}}
  - id: end
    type: end
    config:
      outputs:
        doubled: {{type: integer}}
        big: {{type: string, required: false}}
        small: {{type: string, required: false}}
edges:
  - {{source: start, source_handle: x, target: double, target_handle: data}}
  - {{source: double, source_handle: doubled, target: check, target_handle: value}}
  - {{source: check, source_handle: "true", target: big}}
  - {{source: check, source_handle: "false", target: small}}
  - {{source: double, source_handle: doubled, target: end, target_handle: doubled}}
  - {{source: big, source_handle: label, target: end, target_handle: big}}
  - {{source: small, source_handle: label, target: end, target_handle: small}}
"""


# An edge from a handle the condition lacks; the end's required input is not connected.
INVALID = """\
name: broken
inputs:
  x: {type: integer}
nodes:
  - {id: start, type: start}
  - {id: check, type: condition, config: {expression: "value > `1`"}}
  - id: end
    type: end
    config: {outputs: {doubled: {type: integer}}}
edges:
  - {source: start, source_handle: x, target: check, target_handle: value}
  - {source: check, source_handle: maybe, target: end}
"""

# abs() of a string fails when the block runs, not when the workflow is saved.
FRAGILE = """\
name: fragile
inputs:
  s: {type: any}
nodes:
  - {id: start, type: start}
  - id: boom
    type: transform
    config: {expressions: {n: "abs(inputs.s)"}}
edges:
  - {source: start, source_handle: s, target: boom, target_handle: data}
"""

GATE = """\
name: gate
inputs:
  x: {type: integer}
nodes:
  - {id: start, type: start}
  - {id: ok, type: approval, config: {message: "Go on?"}}
  - id: end
    type: end
    config: {outputs: {x: {type: integer}}}
edges:
  - {source: start, source_handle: x, target: ok, target_handle: value}
  - {source: ok, source_handle: approved, target: end}
  - {source: start, source_handle: x, target: end, target_handle: x}
"""


# -- helpers ---------------------------------------------------------------------------------


def atrium(server: RemoteAtriumServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``atrium workflows ARGS`` with the admin key."""
    return server.cli("workflows", *args, api_key=server.api_key)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that must have succeeded."""
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 1 with an ``error:`` line naming each fragment; no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert "error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def cells(line: str) -> list[str]:
    """The cells of one line of a rich table (empty if it is a rule)."""
    return [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]


def row(output: str, cell: str) -> list[str]:
    """The cells of the table row that has a cell equal to ``cell``."""
    for line in output.splitlines():
        if cell in cells(line):
            return cells(line)
    pytest.fail(f"no row with {cell!r} in:\n{output}")


def status_of(output: str) -> tuple[str, str]:
    """The run id and status from ``run run_x: succeeded (...)``."""
    found = re.search(r"^run (run_\w+): (\w+)", output, flags=re.MULTILINE)
    assert found, output
    return found.group(1), found.group(2)


def outputs_of(output: str) -> Any:
    """The JSON printed after ``outputs:``."""
    lines = output.splitlines()
    start = lines.index("outputs:") + 1
    end = start if lines[start] == "{}" else lines.index("}", start)
    return json.loads("\n".join(lines[start : end + 1]))


def run_record(server: RemoteAtriumServer, run_id: str) -> dict[str, Any]:
    """``GET /v1/workflows/runs/{id}``."""
    with server.http() as http:
        resp = http.get(f"/v1/workflows/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    record: dict[str, Any] = resp.json()
    return record


def draft(server: RemoteAtriumServer, workflow: str) -> Any:
    """The workflow's draft definition, from the API."""
    with server.http() as http:
        resp = http.get(f"/v1/workflows/{workflow}")
    assert resp.status_code == 200, resp.text
    return resp.json()["draft"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The definitions the tests import and validate."""
    root = tmp_path_factory.mktemp("workflows")
    (root / "doubler.yaml").write_text(doubler("doubler"))
    (root / "threshold-1.yaml").write_text(doubler("threshold", 40))
    (root / "threshold-2.yaml").write_text(doubler("threshold", 50))
    (root / "invalid.yaml").write_text(INVALID)
    (root / "fragile.yaml").write_text(FRAGILE)
    (root / "gate.yaml").write_text(GATE)
    return root


@pytest.fixture(scope="module")
def imported(server: RemoteAtriumServer, files: Path) -> subprocess.CompletedProcess[str]:
    """``doubler`` imported and published: the import's result."""
    return atrium(server, "import", str(files / "doubler.yaml"), "--publish", "--note", "first")


@pytest.fixture(scope="module")
def first_run(
    server: RemoteAtriumServer, imported: subprocess.CompletedProcess[str]
) -> subprocess.CompletedProcess[str]:
    """``doubler`` run with x=21."""
    ok(imported)
    return atrium(server, "run", "doubler", "--input", "x=21")


# -- definitions -----------------------------------------------------------------------------


def test_import_with_publish_prints_the_id_and_version(
    imported: subprocess.CompletedProcess[str],
) -> None:
    output = ok(imported)

    assert re.search(r"imported workflow doubler \(wf_\w+\)", output), output
    assert re.search(r"published doubler version 1 \(wfv_\w+\)", output), output


def test_list_shows_the_published_version(
    server: RemoteAtriumServer, imported: subprocess.CompletedProcess[str]
) -> None:
    listed = row(ok(atrium(server, "list")), "doubler")

    assert listed[1] == "Doubles x and says whether it is big."
    assert listed[2] == "v1"
    assert listed[4].startswith("wf_")


def test_export_then_import_gives_the_same_definition(
    server: RemoteAtriumServer, imported: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    before = draft(server, "doubler")
    exported = ok(atrium(server, "export", "doubler"))
    target = tmp_path / "exported.yaml"

    written = atrium(server, "export", "doubler", "--version", "1", "-o", str(target))
    again = atrium(server, "import", str(target))

    assert "sum([inputs.x, inputs.x])" in exported
    assert ok(written) == ""
    assert "wrote the version 1 of doubler" in written.stderr
    assert target.read_text() == exported
    assert "imported workflow doubler" in ok(again)
    assert draft(server, "doubler") == before
    assert ok(atrium(server, "export", "doubler")) == exported


def test_validate_names_each_node_and_field(server: RemoteAtriumServer, files: Path) -> None:
    invalid = atrium(server, "validate", str(files / "invalid.yaml"))
    valid = atrium(server, "validate", str(files / "doubler.yaml"))

    failed(invalid, "invalid.yaml: 2 problem(s)")
    problems = invalid.stdout.splitlines()
    assert any(
        p.startswith("node 'check', edges[1].source_handle: no output or handle 'maybe'")
        for p in problems
    ), problems
    assert "node 'end', inputs.doubled: required input is not connected" in problems
    assert "doubler.yaml: valid" in ok(valid)


def test_diff_shows_what_changed_between_versions(server: RemoteAtriumServer, files: Path) -> None:
    ok(atrium(server, "import", str(files / "threshold-1.yaml"), "--publish"))
    second = atrium(server, "import", str(files / "threshold-2.yaml"), "--publish", "--note", "50")

    changed = atrium(server, "diff", "threshold", "--from", "1", "--to", "2")
    same = atrium(server, "diff", "threshold", "--from", "2")

    assert "published threshold version 2" in ok(second)
    lines = ok(changed).splitlines()
    assert lines[:2] == ["--- v1", "+++ v2"]
    assert "-    expression: value > `40`" in lines
    assert "+    expression: value > `50`" in lines
    assert ok(same).strip() == "no differences"


# -- runs ------------------------------------------------------------------------------------


def test_run_prints_the_outputs_and_each_block(
    first_run: subprocess.CompletedProcess[str],
) -> None:
    output = ok(first_run)

    assert status_of(output)[1] == "succeeded"
    assert outputs_of(output) == {"doubled": 42, "big": "big"}
    assert row(output, "double")[:3] == ["double", "transform", "succeeded"]
    assert row(output, "check")[:3] == ["check", "condition", "succeeded"]
    assert row(output, "small")[2:4] == ["skipped", "-"]
    assert row(output, "end")[4] == "0"  # tokens


def test_inputs_from_json_and_key_values(
    server: RemoteAtriumServer, imported: subprocess.CompletedProcess[str]
) -> None:
    # --input wins over --inputs-json for the same key.
    result = atrium(server, "run", "doubler", "--inputs-json", '{"x": 1}', "--input", "x=30")

    assert outputs_of(ok(result)) == {"doubled": 60, "big": "big"}


def test_watch_follows_the_run_to_its_end(
    server: RemoteAtriumServer, imported: subprocess.CompletedProcess[str]
) -> None:
    result = atrium(server, "run", "doubler", "--input", "x=1", "--watch")

    output = ok(result)
    assert "following run" in result.stderr
    assert status_of(output)[1] == "succeeded"
    assert outputs_of(output) == {"doubled": 2, "small": "small"}
    assert row(output, "big")[2] == "skipped"


def test_async_prints_the_id_and_show_finds_the_run(
    server: RemoteAtriumServer, imported: subprocess.CompletedProcess[str], wait_until: WaitUntil
) -> None:
    run_id = ok(atrium(server, "run", "doubler", "--input", "x=4", "--async")).strip()

    assert re.fullmatch(r"run_\w+", run_id), run_id
    wait_until(
        lambda: run_record(server, run_id)["status"] == "succeeded",
        timeout=RUN_TIMEOUT_S,
        what=f"run {run_id} to succeed",
    )
    shown = ok(atrium(server, "show", run_id))
    assert status_of(shown) == (run_id, "succeeded")
    assert outputs_of(shown) == {"doubled": 8, "small": "small"}
    assert row(shown, "double")[2] == "succeeded"


def test_a_missing_input_fails_readably(
    server: RemoteAtriumServer, imported: subprocess.CompletedProcess[str]
) -> None:
    missing = atrium(server, "run", "doubler")
    mistyped = atrium(server, "run", "doubler", "--input", "x=abc")

    failed(missing, "400", "missing required input 'x'")
    failed(mistyped, "400", "input 'x' must be integer")


def test_a_failed_run_exits_1_with_its_error(server: RemoteAtriumServer, files: Path) -> None:
    ok(atrium(server, "import", str(files / "fragile.yaml"), "--publish"))

    result = atrium(server, "run", "fragile", "--input", "s=abc")

    failed(result, "failed", "boom", "abs()")
    assert status_of(result.stdout)[1] == "failed"
    boom = row(result.stdout, "boom")
    assert boom[2] == "failed"
    assert "invalid type" in boom[5]


def test_runs_lists_the_run(
    server: RemoteAtriumServer, first_run: subprocess.CompletedProcess[str]
) -> None:
    run_id, _ = status_of(ok(first_run))

    listed = row(ok(atrium(server, "runs", "doubler", "--limit", "50")), run_id)
    succeeded = ok(atrium(server, "runs", "--status", "succeeded"))
    none_failed = ok(atrium(server, "runs", "doubler", "--status", "failed"))

    assert listed[:3] == ["doubler", "1", "succeeded"]
    assert run_id in succeeded
    assert "run_" not in none_failed


def test_approve_and_cancel_runs_waiting_for_a_person(
    server: RemoteAtriumServer, files: Path, wait_until: WaitUntil
) -> None:
    ok(atrium(server, "import", str(files / "gate.yaml"), "--publish"))
    to_approve = ok(atrium(server, "run", "gate", "--input", "x=7", "--async")).strip()
    to_cancel = ok(atrium(server, "run", "gate", "--input", "x=8", "--async")).strip()
    for run_id in (to_approve, to_cancel):
        wait_until(
            lambda run_id=run_id: run_record(server, run_id)["status"] == "waiting",
            timeout=RUN_TIMEOUT_S,
            what=f"run {run_id} to wait for its approval",
        )

    waiting = atrium(server, "show", to_approve)
    approved = atrium(server, "approve", to_approve, "ok", "--comment", "fine")
    cancelled = atrium(server, "cancel", to_cancel)

    assert row(ok(waiting), "ok")[2] == "waiting"
    assert "approved block 'ok'" in ok(approved)
    assert status_of(ok(cancelled)) == (to_cancel, "cancelled")
    wait_until(
        lambda: run_record(server, to_approve)["status"] == "succeeded",
        timeout=RUN_TIMEOUT_S,
        what=f"run {to_approve} to succeed once approved",
    )
    assert outputs_of(ok(atrium(server, "show", to_approve))) == {"x": 7}
    failed(atrium(server, "cancel", to_approve), "409", "already ended")


def test_wrong_names_and_keys_fail_readably(
    server: RemoteAtriumServer, imported: subprocess.CompletedProcess[str], files: Path
) -> None:
    failed(atrium(server, "run", "nowhere"), "404", "nowhere")
    failed(atrium(server, "show", "run_nothing"), "404", "run_nothing")
    failed(atrium(server, "diff", "doubler", "--from", "9"), "404")
    failed(atrium(server, "import", str(files / "absent.yaml")), "absent.yaml")
    failed(server.cli("workflows", "list"), "API key")
    failed(server.cli("workflows", "list", api_key="atr-wrong-key-000000000000"), "401")
    bad_json = atrium(server, "run", "doubler", "--inputs-json", "[1]")
    assert bad_json.returncode == 2, bad_json.stderr  # a usage error
    assert "--inputs-json" in bad_json.stderr
