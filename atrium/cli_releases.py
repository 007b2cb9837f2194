"""``atrium releases ...`` and ``atrium deployments ...``: the release pipeline from the shell.

Every command talks to a running server (``--url`` / ``ATRIUM_URL``) with an API key
(``--api-key`` / ``ATRIUM_API_KEY``); changes need an admin key. Failures print one
``error:`` line on stderr and exit with code 1.
"""

# Typer commands take their options as parameters.

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from atrium._cli import ApiKeyOption, ConfigOption, UrlOption, connected, fail, out
from atrium.api_client import ApiClient
from atrium.cli_models import local_source

__all__ = ["deployments_app", "releases_app"]

releases_app = typer.Typer(
    help="Releases: new model versions through gates and canary.", no_args_is_help=True
)
deployments_app = typer.Typer(
    help="Deployments: model versions running as replicas.", no_args_is_help=True
)

ReleaseArgument = Annotated[str, typer.Argument(help="The release id (rel_...).")]
NameArgument = Annotated[str, typer.Argument(help="The deployment name.")]
_ENDED = {"succeeded", "failed", "rolled_back", "aborted"}


class ReleasesClient(ApiClient):
    """``/v1/releases``."""

    prefix = "/v1/releases"


class DeploymentsClient(ApiClient):
    """``/v1/deployments``."""

    prefix = "/v1/deployments"


def _when(epoch: int | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


@releases_app.command("create")
def create(
    model: Annotated[str, typer.Argument(help="The registry model it becomes a version of.")],
    source: Annotated[str, typer.Argument(help="The model file: a path or gs:// / s3:// URL.")],
    release_id: Annotated[str | None, typer.Option(help="The upstream release id.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the release until it ends.")] = False,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Release a model file by hand: registered, deployed, gated, canaried, promoted."""
    body: dict[str, Any] = {"model": model, "uri": local_source(source)}
    if release_id:
        body["release_id"] = release_id
    with connected(ReleasesClient, api_key, url, config) as client:
        release = client.call("POST", json=body)
        out.print(f"release {release['id']} started for {escape(model)}", highlight=False)
        if wait:
            release = _follow(client, release["id"])
            _print_release(release)
            if release["status"] != "succeeded":
                raise typer.Exit(1)


def _follow(client: ReleasesClient, release_id: str) -> Any:
    seen = 0
    while True:
        release = client.call("GET", release_id)
        for entry in release["timeline"][seen:]:
            out.print(Text(_timeline_line(entry)))
        seen = len(release["timeline"])
        if release["status"] in _ENDED:
            return release
        time.sleep(1.0)


@releases_app.command("list")
def list_releases(
    model: Annotated[str | None, typer.Option(help="Only this model's releases.")] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Releases, newest first."""
    with connected(ReleasesClient, api_key, url, config) as client:
        data = client.call("GET", params={"model": model} if model else None)["data"]
    table = Table("id", "model", "version", "stage", "status", "weight", "started", "reason")
    for r in data:
        table.add_row(
            r["id"], Text(r["model"]), str(r["version"] or "-"), r["stage"], r["status"],
            f"{r['weight']:g}%", _when(r["created_at"]), Text(r["reason"] or ""),
        )  # fmt: skip
    out.print(table, crop=False)


@releases_app.command("show")
def show(
    release_id: ReleaseArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """A release and the timeline of its stages."""
    with connected(ReleasesClient, api_key, url, config) as client:
        _print_release(client.call("GET", release_id))


def _print_release(release: dict[str, Any]) -> None:
    version = release["version"] or "-"
    out.print(
        Text(
            f"{release['id']}  {release['model']} version {version}  {release['stage']}  "
            f"{release['status']}  weight {release['weight']:g}%"
        )
    )
    if release["reason"]:
        out.print(Text(f"reason: {release['reason']}"))
    if release["seconds_to_production"] is not None:
        out.print(f"detection to production: {release['seconds_to_production']:.1f} s")
    start = _parse(release["timeline"][0]["at"]) if release["timeline"] else None
    for entry in release["timeline"]:
        out.print(Text(_timeline_line(entry, start)))


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _timeline_line(entry: dict[str, Any], start: datetime | None = None) -> str:
    at = _parse(entry["at"])
    offset = f"+{(at - start).total_seconds():7.1f}s" if start is not None else ""
    what = entry.get("event") or f"{entry['stage']} ({entry['status']})"
    line = f"{at.strftime('%H:%M:%S')} {offset}  {what}"
    reasons = entry.get("reasons")
    return f"{line}: {'; '.join(reasons)}" if reasons else line


def _control(action: str) -> None:
    def command(
        release_id: ReleaseArgument,
        api_key: ApiKeyOption = None,
        url: UrlOption = None,
        config: ConfigOption = None,
    ) -> None:
        with connected(ReleasesClient, api_key, url, config) as client:
            client.call("POST", release_id, action)
        out.print(f"{action} sent to {release_id}", highlight=False)

    command.__doc__ = f"Ask a running release to {action}."
    releases_app.command(action)(command)


for _action in ("pause", "resume", "abort", "promote", "rollback", "approve", "reject"):
    _control(_action)


# -- deployments ----------------------------------------------------------------------


@deployments_app.command("list")
def list_deployments(
    api_key: ApiKeyOption = None, url: UrlOption = None, config: ConfigOption = None
) -> None:
    """Deployments with their replicas."""
    with connected(DeploymentsClient, api_key, url, config) as client:
        data = client.call("GET")["data"]
    table = Table("name", "model", "version", "runtime", "ready", "desired", "min-max", "pool")
    for d in data:
        bounds = d["bounds"]
        table.add_row(
            Text(d["name"]), Text(d["model"]), str(d["version"]), d["runtime"], str(d["ready"]),
            str(d["desired"]), f"{bounds['min']}-{bounds['max']}", Text(d["allocation"]["pool"]),
        )  # fmt: skip
    out.print(table, crop=False)


@deployments_app.command("show")
def show_deployment(
    name: NameArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """A deployment and each replica's state."""
    with connected(DeploymentsClient, api_key, url, config) as client:
        d = client.call("GET", name)
    out.print(Text(f"{d['name']}: {d['model']} version {d['version']} on {d['runtime']}"))
    table = Table("replica", "state", "url", "pid", "restarts", "in flight")
    for r in d["replicas"]:
        table.add_row(
            str(r["index"]), r["state"], r["base_url"] or "-", str(r["pid"] or "-"),
            str(r["restarts"]), str(r["in_flight"]),
        )  # fmt: skip
    out.print(table, crop=False)


@deployments_app.command("create")
def create_deployment(
    name: NameArgument,
    model: Annotated[str, typer.Option(help="Registry model.")],
    version: Annotated[int | None, typer.Option(min=1, help="Registry version.")] = None,
    alias: Annotated[str | None, typer.Option(help="Or a registry alias.")] = None,
    replicas: Annotated[int, typer.Option(min=0, help="Replicas to start.")] = 1,
    max_replicas: Annotated[int | None, typer.Option(min=1, help="Autoscaling bound.")] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Deploy a registry version as local replicas (ready when this returns)."""
    if (version is None) == (alias is None):
        raise fail("give --version or --alias")
    bounds = {"min": replicas, "max": max(max_replicas or replicas, 1)}
    body: dict[str, Any] = {"name": name, "model": model, "replicas": bounds}
    body.update({"version": version} if version is not None else {"alias": alias})
    with connected(DeploymentsClient, api_key, url, config) as client:
        d = client.call("POST", json=body, timeout=600.0)
    out.print(Text(f"deployed {d['name']}: {d['ready']} replicas ready"))


@deployments_app.command("scale")
def scale(
    name: NameArgument,
    replicas: Annotated[int, typer.Argument(min=0, help="Replica count.")],
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Scale a deployment (new replicas are ready when this returns)."""
    with connected(DeploymentsClient, api_key, url, config) as client:
        d = client.call("POST", name, "scale", json={"replicas": replicas}, timeout=600.0)
    out.print(Text(f"{d['name']}: {d['desired']} replicas ({d['ready']} ready)"))


@deployments_app.command("delete")
def delete(
    name: NameArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Drain and stop a deployment's replicas."""
    with connected(DeploymentsClient, api_key, url, config) as client:
        client.call("DELETE", name, timeout=120.0)
    out.print(Text(f"deleted {name}"))
