"""What every ``atrium`` sub-command that talks to a server shares: the consoles, the
``--api-key`` / ``--url`` / ``--config`` options, finding the server, and turning a client
failure into one ``error:`` line on stderr with exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from atrium.api_client import ApiClient, ClientError
from atrium.core.settings import load_settings

C = TypeVar("C", bound=ApiClient)

# Piped output has no terminal width; rich would assume 80 columns and cut rows.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, soft_wrap=True)

ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="ATRIUM_API_KEY", help="API key (or ATRIUM_API_KEY)."),
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="ATRIUM_URL", help="Atrium base URL (default: from settings)."),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML settings file (default: atrium.yaml).")
]


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; the exit (code 1) for the caller to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=1)


def server_url(config: Path | None, url: str | None) -> str:
    """``--url``, or where the settings say the server listens."""
    if url:
        return url.rstrip("/")
    try:
        settings = load_settings(config)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        raise fail(f"invalid settings: {exc}") from None
    host = settings.server.host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        host = "127.0.0.1"
    return f"http://{host}:{settings.server.port}"


@contextmanager
def connected(
    factory: Callable[[str, str], C], api_key: str | None, url: str | None, config: Path | None
) -> Iterator[C]:
    """A client for the command's server; any :class:`ClientError` exits with 1."""
    if not api_key:
        raise fail("no API key: pass --api-key or set ATRIUM_API_KEY")
    client = factory(server_url(config, url), api_key)
    try:
        yield client
    except ClientError as exc:
        raise fail(exc.message) from None
    finally:
        client.close()


def print_table(table: Table) -> None:
    """A table in full, never cropped to the terminal."""
    out.print(table, crop=False)


def text(value: object) -> Text:
    """A table cell shown as is: names and errors may hold ``[markup]``."""
    return Text("" if value is None else str(value))
