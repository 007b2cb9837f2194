"""``atrium models register|versions|show|alias``: the model registry from the shell.

Every command talks to a running server (``--url`` / ``ATRIUM_URL``) with an API key
(``--api-key`` / ``ATRIUM_API_KEY``); changes need an admin key. Failures print one
``error:`` line on stderr and exit with code 1. :func:`add_registry_commands` attaches
the commands to ``atrium models`` (this module does not import ``atrium.cli``).
"""

# Typer commands take their options as parameters.

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from atrium._cli import ApiKeyOption, ConfigOption, UrlOption, connected, fail, out
from atrium.api_client import ApiClient, ApiError

__all__ = ["RegistryClient", "add_registry_commands", "local_source"]

_PREFIX = "/v1/registry/models"
# Registering answers once the file is copied into the model store.
REGISTER_TIMEOUT_S = 3600.0

ModelArgument = Annotated[str, typer.Argument(help="The registered model (name or id).")]


class RegistryClient(ApiClient):
    """The registry API of one server, as one API key sees it."""

    prefix = _PREFIX

    def ensure_model(self, name: str) -> None:
        """Create the model unless it exists."""
        try:
            self.call("GET", name)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.call("POST", json={"name": name})


@contextmanager
def _client(api_key: str | None, url: str | None, config: Path | None) -> Iterator[RegistryClient]:
    with connected(RegistryClient, api_key, url, config) as client:
        yield client


def local_source(source: str) -> str:
    """A local file the shell can see is sent as an absolute path (the server is local)."""
    scheme = urlsplit(source).scheme
    if (not scheme or len(scheme) == 1) and Path(source).expanduser().exists():
        return str(Path(source).expanduser().resolve())
    return source


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1_048_576:,.1f} MiB"


def _params(count: object) -> str:
    if not isinstance(count, int):
        return "-"
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def register(
    name: ModelArgument,
    source: Annotated[str, typer.Argument(help="Model file: a path or gs:// / s3:// URL.")],
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    alias: Annotated[list[str] | None, typer.Option(help="Point this alias at it.")] = None,
    release_id: Annotated[str | None, typer.Option(help="The upstream release id.")] = None,
    source_name: Annotated[str | None, typer.Option(help="Where it came from.")] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Register a model file as a new version (creates the model if needed)."""
    body: dict[str, Any] = {"source": local_source(source), "tags": tag or []}
    body.update({k: v for k, v in (("release_id", release_id), ("source_name", source_name)) if v})
    with _client(api_key, url, config) as client:
        client.ensure_model(name)
        version = client.call("POST", name, "versions", json=body, timeout=REGISTER_TIMEOUT_S)
        for each in alias or []:
            client.call("PUT", name, "aliases", each, json={"version": version["version"]})
    meta = version["metadata"]
    out.print(
        f"registered {escape(name)} version {version['version']}: {version['format']}, "
        f"{escape(str(meta.get('architecture', '-')))}, {_params(meta.get('parameter_count'))} "
        f"parameters, {escape(str(meta.get('quantization', '-')))}, "
        f"{_size(version['size_bytes'])}, sha256 {(version['sha256'] or '-')[:12]}",
        highlight=False,
    )
    for each in alias or []:
        out.print(f"alias {escape(each)} -> version {version['version']}", highlight=False)


def versions(
    name: ModelArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """List a model's versions with their aliases."""
    with _client(api_key, url, config) as client:
        model = client.call("GET", name)
    by_version: dict[int, list[str]] = {}
    for alias_name, number in model["aliases"].items():
        by_version.setdefault(number, []).append(alias_name)
    table = Table("version", "status", "format", "architecture", "parameters", "quantization")
    for column in ("context", "size", "tags", "aliases", "created"):
        table.add_column(column)
    for v in model["versions"]:
        meta = v["metadata"]
        table.add_row(
            str(v["version"]), v["status"], v["format"], Text(str(meta.get("architecture", "-"))),
            _params(meta.get("parameter_count")), Text(str(meta.get("quantization", "-"))),
            str(meta.get("context_length", "-")), _size(v["size_bytes"]),
            Text(", ".join(v["tags"])), Text(", ".join(by_version.get(v["version"], []))),
            v["created_at"][:19],
        )  # fmt: skip
    out.print(table, crop=False)


def show(
    name: ModelArgument,
    version: Annotated[int | None, typer.Option(min=1, help="The version number.")] = None,
    alias: Annotated[str | None, typer.Option(help="The version an alias points to.")] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Show a version (the latest without --version/--alias): metadata, aliases, lineage."""
    if version is not None and alias is not None:
        raise fail("give --version or --alias, not both")
    with _client(api_key, url, config) as client:
        if alias is not None:
            version = client.call("GET", name, "aliases", alias)["version"]
        elif version is None:
            listed = client.call("GET", name, "versions")["data"]
            if not listed:
                raise fail(f"{name} has no versions")
            version = listed[-1]["version"]
        record = client.call("GET", name, "versions", str(version))
    _print_version(record)


def _print_version(record: dict[str, Any]) -> None:
    table = Table("field", "value", show_header=False)
    rows = {
        "version": record["version"],
        "id": record["id"],
        "status": record["status"],
        "format": record["format"],
        "artifact": record["artifact_uri"],
        "sha256": record["sha256"] or "-",
        "size": _size(record["size_bytes"]),
        "tags": ", ".join(record["tags"]) or "-",
        "aliases": ", ".join(record["aliases"]) or "-",
        "created": record["created_at"][:19],
    }
    for key, value in record["metadata"].items():
        rows[key] = ", ".join(value) if isinstance(value, list) else value
    for key, value in rows.items():
        table.add_row(key, Text(str(value)))
    out.print(table, crop=False)
    for item in record["lineage"]:
        out.print(Text(f"{item['created_at'][:19]}  {item['kind']}  {item['ref']}"))


def set_alias(
    name: ModelArgument,
    alias: Annotated[str, typer.Argument(help="The alias (production, canary, ...).")],
    version: Annotated[int, typer.Argument(min=1, help="The version it points to.")],
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Point an alias at a version (needs an admin key)."""
    with _client(api_key, url, config) as client:
        moved = client.call("PUT", name, "aliases", alias, json={"version": version})
    out.print(f"{escape(name)}: alias {escape(alias)} -> version {moved['version']}")


def add_registry_commands(models_app: typer.Typer) -> None:
    """Attach ``register``, ``versions``, ``show`` and ``alias`` to ``atrium models``."""
    models_app.command("register")(register)
    models_app.command("versions")(versions)
    models_app.command("show")(show)
    models_app.command("alias")(set_alias)
