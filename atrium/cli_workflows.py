"""``atrium workflows ...``: workflows from the command line, through the server's API.

Every command talks to a running server (``--url`` / ``ATRIUM_URL``) with an API key
(``--api-key`` / ``ATRIUM_API_KEY``); importing and publishing need an admin key, running
an inference key. Failures print one ``error:`` line on stderr and exit with code 1; so
does a run that ends failed or cancelled.

This module does not import ``atrium.cli`` (which registers it): the two would import
each other, and ``python -m atrium.cli`` would load ``cli.py`` twice.
"""

# Typer commands take their options as parameters.

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from atrium._cli import (
    ApiKeyOption,
    ConfigOption,
    UrlOption,
    connected,
    err,
    fail,
    out,
    print_table,
    text,
)
from atrium.workflow_client import WorkflowClient, WorkflowClientError, run_timeout

workflows_app = typer.Typer(
    help="Workflows: import, publish, run and follow them.", no_args_is_help=True
)

WorkflowArgument = Annotated[str, typer.Argument(help="The workflow (name or id).")]
RunArgument = Annotated[str, typer.Argument(help="The run's id.")]
DefinitionArgument = Annotated[
    Path, typer.Argument(help="A workflow definition (YAML, or JSON).", dir_okay=False)
]
NoteOption = Annotated[str, typer.Option(help="What changed in this version.")]

_STATUS_STYLES = {
    "pending": "dim",
    "running": "yellow",
    "waiting": "magenta",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "red",
    "skipped": "dim",
}


class RunStatusChoice(StrEnum):
    """Run statuses `workflows runs` filters on."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@contextmanager
def _client(api_key: str | None, url: str | None, config: Path | None) -> Iterator[WorkflowClient]:
    with connected(WorkflowClient, api_key, url, config) as client:
        yield client


def _status(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(f"{path}: cannot read it: {reason}") from None


# -- definitions -----------------------------------------------------------------------------


@workflows_app.command("list")
def list_all(
    api_key: ApiKeyOption = None, url: UrlOption = None, config: ConfigOption = None
) -> None:
    """List the workflows with their published versions."""
    with _client(api_key, url, config) as client:
        records = client.call("GET")["data"]
    table = Table("name", "description", "published", "updated")
    table.add_column("id", no_wrap=True)
    for workflow in records:
        published = workflow["published_version"]
        table.add_row(
            text(workflow["name"]), text(workflow["description"]),
            f"v{published}" if published else "draft only", workflow["updated_at"][:19],
            workflow["id"],
        )  # fmt: skip
    print_table(table)


@workflows_app.command("import")
def import_file(
    file: DefinitionArgument,
    publish: Annotated[
        bool, typer.Option("--publish", help="Publish it as the next version too.")
    ] = False,
    note: NoteOption = "",
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a workflow from a file, or replace the draft of the one with its name."""
    if note and not publish:
        raise typer.BadParameter("a note goes with --publish", param_hint="--note")
    text = _read(file)
    with _client(api_key, url, config) as client:
        record = client.send_yaml("POST", text=text)
        out.print(f"imported workflow {escape(record['name'])} ({record['id']}) as its draft")
        if publish:
            _publish(client, record["id"], note)


def _publish(client: WorkflowClient, workflow: str, note: str) -> None:
    ref = client.call("POST", workflow, "publish", json={"note": note})
    out.print(f"published {escape(ref['workflow'])} version {ref['version']} ({ref['id']})")


@workflows_app.command("publish")
def publish(
    workflow: WorkflowArgument,
    note: NoteOption = "",
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Freeze the draft as the next version; new runs use it."""
    with _client(api_key, url, config) as client:
        _publish(client, workflow, note)


@workflows_app.command("export")
def export(
    workflow: WorkflowArgument,
    version: Annotated[
        int | None, typer.Option(min=1, help="A published version (default: the draft).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Print a workflow's definition as YAML (the draft, or a published version)."""
    params = {"version": version} if version is not None else None
    with _client(api_key, url, config) as client:
        exported = client.text("GET", workflow, "export", params=params)
    if output is None:
        sys.stdout.write(exported)
        return
    try:
        output.write_text(exported, encoding="utf-8")
    except OSError as exc:
        raise fail(f"{output}: cannot write it: {exc.strerror or exc}") from None
    which = f"version {version}" if version is not None else "draft"
    err.print(f"wrote the {which} of {escape(workflow)} to {escape(str(output))}")


@workflows_app.command("validate")
def validate(
    file: DefinitionArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Check a definition without saving it; print every problem (exit 1 when invalid)."""
    text = _read(file)
    with _client(api_key, url, config) as client:
        answer = client.send_yaml("POST", "validate", text=text)
    problems = answer["problems"]
    if answer["valid"]:
        out.print(f"{escape(str(file))}: valid")
        return
    for problem in problems:
        out.print(_problem(problem), markup=False, highlight=False, soft_wrap=True)
    raise fail(f"{file}: {len(problems)} problem(s)")


def _problem(problem: dict[str, Any]) -> str:
    """``node 'x', config.expression: message`` (the graph's own wording)."""
    node, field, message = problem.get("node"), problem.get("field"), problem["message"]
    where = f"node {node!r}, {field}" if node else str(field or "definition")
    return f"{where}: {message}"


@workflows_app.command("diff")
def diff(
    workflow: WorkflowArgument,
    old: Annotated[int, typer.Option("--from", min=1, help="The version to compare from.")],
    new: Annotated[
        int | None, typer.Option("--to", min=1, help="The version to compare to (default: draft).")
    ] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Print what changed between two versions (or a version and the draft), as a diff."""
    params = {"from": old, **({"to": new} if new is not None else {})}
    with _client(api_key, url, config) as client:
        answer = client.call("GET", workflow, "diff", params=params)
    unified: str = answer["unified"]
    if not unified:
        out.print("no differences", style="dim")
        return
    for line in unified.splitlines():
        out.print(Text(line, style=_diff_style(line)), soft_wrap=True)


def _diff_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("@@"):
        return "cyan"
    return {"+": "green", "-": "red"}.get(line[:1], "")


# -- runs ------------------------------------------------------------------------------------


@workflows_app.command("run")
def run(
    workflow: WorkflowArgument,
    input_: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", help="An input KEY=VALUE (repeatable); VALUE is JSON when it parses."
        ),
    ] = None,
    inputs_json: Annotated[
        str | None, typer.Option("--inputs-json", help="Inputs as a JSON object.")
    ] = None,
    inputs_file: Annotated[
        Path | None, typer.Option("--inputs-file", help="A JSON file holding the inputs object.")
    ] = None,
    version: Annotated[
        int | None, typer.Option(min=1, help="Run this version (default: the published one).")
    ] = None,
    async_: Annotated[
        bool, typer.Option("--async", help="Start the run and print its id; do not wait.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.001, max=3600, help="Longest to wait for the run, in seconds."),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow the blocks live until the run ends.")
    ] = False,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Run a workflow: wait and print its outputs and blocks (exit 1 if it fails)."""
    inputs = _run_inputs(input_ or [], inputs_json, inputs_file)
    body: dict[str, Any] = {"inputs": inputs, "mode": "async" if async_ or watch else "sync"}
    optional = {"version": version, "timeout_seconds": timeout}
    body.update({k: v for k, v in optional.items() if v is not None})
    with _client(api_key, url, config) as client:
        started = client.call("POST", workflow, "runs", json=body, timeout=run_timeout(timeout))
        if watch:
            _follow(client, started["id"])
            return
        if async_:
            out.print(started["id"], highlight=False)
            return
        record = client.call("GET", "runs", started["id"])
    _print_run(record, record["nodes"])
    _conclude(record, record["nodes"])


def _run_inputs(pairs: list[str], inline: str | None, file: Path | None) -> dict[str, Any]:
    """The inputs object: ``--inputs-json`` or ``--inputs-file``, then each ``--input``."""
    if inline is not None and file is not None:
        raise typer.BadParameter("give --inputs-json or --inputs-file, not both")
    inputs: dict[str, Any] = {}
    if inline is not None:
        inputs = _json_object(inline, "--inputs-json")
    elif file is not None:
        inputs = _json_object(_read(file), "--inputs-file")
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        if not equals or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--input")
        inputs[key.strip()] = _json_value(raw)
    return inputs


def _json_object(raw: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=option)
    return value


def _json_value(raw: str) -> Any:
    """``21`` -> 21, ``true`` -> True, ``[1, 2]`` -> [1, 2]; anything else stays a string."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        return raw


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: `--input x=NaN` is the string "NaN".
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def _follow(client: WorkflowClient, run_id: str) -> None:
    """Show the run's blocks live until it ends, then its outcome (exit 1 if it failed)."""
    err.print(f"following run {run_id} (Ctrl-C stops following; the run goes on)")
    board: dict[str, dict[str, Any]] = {}
    try:
        # Transient: once the run ends, the final table is printed like a synchronous run's.
        with Live(
            _live_view([], run_id), console=out, refresh_per_second=8, transient=True
        ) as live:
            for event, data in client.run_events(run_id):
                if "node" in data:
                    board[data["node"]["node_id"]] = data["node"]
                    live.update(_live_view(list(board.values()), run_id))
                elif event.startswith("run."):
                    break
            else:
                raise WorkflowClientError(f"the event stream of run {run_id} closed early")
    except KeyboardInterrupt:
        err.print(f"stopped following; see the run with: atrium workflows show {run_id}")
        raise typer.Exit(code=130) from None
    record = client.call("GET", "runs", run_id)
    _print_run(record, record["nodes"])
    _conclude(record, record["nodes"])


def _print_run(
    record: dict[str, Any], nodes: list[dict[str, Any]], *, with_inputs: bool = False
) -> None:
    """The run's status line, its outputs as JSON, and a table of its blocks."""
    out.print(_summary(record), soft_wrap=True)
    if record["error"]:
        out.print(Text(f"reason: {record['error']}"), soft_wrap=True)
    if with_inputs:
        out.print("inputs:")
        out.print_json(data=record["inputs"])
    out.print("outputs:")
    out.print_json(data=record["outputs"])
    print_table(_blocks_table(nodes))


def _summary(record: dict[str, Any]) -> Text:
    summary = Text(f"run {record['id']}: ")
    summary.append(_status(record["status"]))
    details = [f"{record['workflow']} v{record['version']}"]
    if record["finished_at"]:
        seconds = _seconds(record["created_at"], record["finished_at"])
        details.append(f"{seconds:.2f} s")
    details.append(f"{record['tokens']} tokens")
    summary.append(f" ({', '.join(details)})")
    return summary


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _blocks_table(nodes: list[dict[str, Any]]) -> Table:
    """One row per block: its id, type, status, milliseconds, tokens (and error)."""
    table = Table("block", "type", "status", "ms", "tokens")
    with_errors = any(n.get("error") for n in nodes)
    if with_errors:
        table.add_column("error")
    for node in nodes:
        cells: list[RenderableType] = [
            text(node["node_id"]), text(node["block_type"]), _status_cell(node["status"]),
            _milliseconds(node.get("duration_ms")), str(node.get("tokens") or 0),
        ]  # fmt: skip
        if with_errors:
            cells.append(text(node.get("error") or ""))
        table.add_row(*cells)
    return table


def _live_view(nodes: list[dict[str, Any]], run_id: str) -> RenderableType:
    """The blocks so far, and how to approve a block the run waits on."""
    waiting = [n["node_id"] for n in nodes if n["status"] == "waiting"]
    if not waiting:
        return _blocks_table(nodes)
    hint = Text(f"waiting for approval: {_approve_command(run_id, waiting)}", style="magenta")
    return Group(_blocks_table(nodes), hint)


def _approve_command(run_id: str, waiting: list[str]) -> str:
    node = waiting[0] if len(waiting) == 1 else "NODE"
    return f"atrium workflows approve {run_id} {node} [--reject]"


def _status_cell(status: str) -> RenderableType:
    if status == "running":
        return Spinner("dots", text=_status(status))
    return _status(status)


def _milliseconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _conclude(record: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
    """Exit 1 for a run that failed or was cancelled; say what a live run waits for."""
    status = record["status"]
    if status in ("failed", "cancelled"):
        reason = f": {record['error']}" if record["error"] else ""
        raise fail(f"run {record['id']} {status}{reason}")
    if status == "waiting":
        waiting = [n["node_id"] for n in nodes if n["status"] == "waiting"]
        err.print(
            f"run {record['id']} waits for approval: {_approve_command(record['id'], waiting)}",
            markup=False,
        )
    elif status in ("pending", "running"):
        err.print(
            f"run {record['id']} is still {status}; see it with: "
            f"atrium workflows show {record['id']}",
            markup=False,
        )


@workflows_app.command("runs")
def runs(
    workflow: Annotated[
        str | None, typer.Argument(help="Only this workflow's runs (name or id).")
    ] = None,
    status: Annotated[
        RunStatusChoice | None, typer.Option(help="Only runs in this status.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Most runs to list.")] = 20,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """List runs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if workflow is not None:
        params["workflow"] = workflow
    if status is not None:
        params["status"] = status.value
    with _client(api_key, url, config) as client:
        records = client.call("GET", "runs", params=params)["data"]
    table = Table("workflow", "version", "status", "trigger", "started", "seconds", "error")
    table.add_column("id", no_wrap=True)
    for record in records:
        seconds = (
            f"{_seconds(record['created_at'], record['finished_at']):.2f}"
            if record["finished_at"]
            else "-"
        )
        table.add_row(
            text(record["workflow"]), str(record["version"]), _status(record["status"]),
            record["trigger"], record["created_at"][:19], seconds, text(record["error"] or ""),
            record["id"],
        )  # fmt: skip
    print_table(table)


@workflows_app.command("show")
def show(
    run_id: RunArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Show a run: its status, inputs, outputs and blocks."""
    with _client(api_key, url, config) as client:
        record = client.call("GET", "runs", run_id)
    _print_run(record, record["nodes"], with_inputs=True)


@workflows_app.command("cancel")
def cancel(
    run_id: RunArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Cancel a run that has not ended."""
    with _client(api_key, url, config) as client:
        record = client.call("POST", "runs", run_id, "cancel")
    out.print(_summary(record), soft_wrap=True)


@workflows_app.command("approve")
def approve(
    run_id: RunArgument,
    node: Annotated[str, typer.Argument(help="The approval block's id.")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approving.")] = False,
    comment: Annotated[str, typer.Option(help="Why (kept with the decision).")] = "",
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Approve (or reject) an approval block a run waits on."""
    body = {"approved": not reject, "comment": comment}
    with _client(api_key, url, config) as client:
        record = client.call("POST", "runs", run_id, "approvals", node, json=body)
    decision = "rejected" if reject else "approved"
    out.print(f"{decision} block {escape(repr(node))} of run {record['id']}")
    out.print(_summary(record), soft_wrap=True)
