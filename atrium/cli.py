"""``atrium ...``: serve the platform, chat with a model, manage models and keys."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from pydantic import ValidationError
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from atrium._cli_bus import Announcements, announce
from atrium.api.keys import key_created
from atrium.bus import KeyChanged
from atrium.cli_audit import audit_app, audited
from atrium.cli_events import events_app
from atrium.cli_kb import kb_app
from atrium.cli_models import add_registry_commands
from atrium.cli_releases import deployments_app, releases_app
from atrium.cli_workflows import workflows_app
from atrium.core.errors import AtriumError, InvalidRequestError
from atrium.core.settings import Settings, load_settings
from atrium.observability.logging import configure_logging
from atrium.store import Database
from atrium.store.keys import ApiKey, ApiKeyRepository, NewKey, Scope
from atrium.store.teams import Team, TeamRepository
from atrium.store.usage import UsageRepository
from atrium.users.cli import users_app

T = TypeVar("T")


class BudgetPeriod(StrEnum):
    """The period a budget covers."""

    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


#: The audit target of key changes: the admin API's path, so both name a key alike.
KEYS_TARGET = "/v1/admin/keys"
TEAMS_TARGET = "/v1/admin/teams"


class CacheChoice(StrEnum):
    """A key's response-cache choice."""

    ON = "on"
    OFF = "off"
    DEFAULT = "default"


class UsageGroup(StrEnum):
    """How `atrium usage` groups its totals."""

    KEY = "key"
    TEAM = "team"
    MODEL = "model"
    DAY = "day"


app = typer.Typer(help="Atrium: one door to every AI capability.", no_args_is_help=True)
models_app = typer.Typer(help="Models the gateway serves.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (works on the store directly).", no_args_is_help=True)
teams_app = typer.Typer(help="Teams (works on the store directly).", no_args_is_help=True)
add_registry_commands(models_app)
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(teams_app, name="teams")
app.add_typer(kb_app, name="kb")
app.add_typer(workflows_app, name="workflows")
app.add_typer(releases_app, name="releases")
app.add_typer(deployments_app, name="deployments")
app.add_typer(events_app, name="events")
app.add_typer(audit_app, name="audit")
app.add_typer(users_app, name="users")

# Piped output has no terminal width; rich would assume 80 columns and cut rows.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML settings file (default: atrium.yaml).")
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="ATRIUM_API_KEY", help="API key (or ATRIUM_API_KEY)."),
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="ATRIUM_URL", help="Atrium base URL (default: from settings)."),
]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        raise _fail(f"invalid settings: {exc}") from None


def _base_url(settings: Settings, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104 - comparing, not binding
    return f"http://{host}:{settings.server.port}"


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
) -> None:
    """Start the platform: gateway, admin API and models, in one process."""
    # Imported here so that `atrium keys ...` does not load llama.cpp and onnxruntime.
    import uvicorn

    from atrium.app import build_app

    settings = _settings(config)
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _configure_logging(settings)
    uvicorn.run(
        build_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _configure_logging(settings: Settings) -> None:
    """Atrium's own log lines on stderr (text or JSON); request lines as JSON on stdout."""
    configure_logging(
        settings.logging, level=settings.server.log_level, request_log=settings.server.request_log
    )


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model or alias.")] = "default",
    max_tokens: Annotated[int, typer.Option(min=1, help="Most tokens to generate.")] = 256,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Ask a model and stream its answer to the terminal."""
    key = _require_key(api_key)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
    endpoint = f"{_base_url(_settings(config), url)}/v1/chat/completions"
    try:
        with httpx.stream("POST", endpoint, json=body, headers=_auth(key), timeout=300) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise _fail(_error_text(resp))
            _print_stream(resp)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach Atrium at {endpoint}: {exc}") from None


def _print_stream(resp: httpx.Response) -> None:
    for line in resp.iter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        chunk = json.loads(payload)
        if "error" in chunk:
            sys.stdout.write("\n")
            raise _fail(chunk["error"]["message"])
        for choice in chunk.get("choices", []):
            sys.stdout.write(choice.get("delta", {}).get("content") or "")
            sys.stdout.flush()
    sys.stdout.write("\n")


@models_app.command("list")
def models_list(
    api_key: ApiKeyOption = None, url: UrlOption = None, config: ConfigOption = None
) -> None:
    """List the models and aliases the server offers to this key."""
    key = _require_key(api_key)
    endpoint = f"{_base_url(_settings(config), url)}/v1/models"
    try:
        resp = httpx.get(endpoint, headers=_auth(key), timeout=30)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach Atrium at {endpoint}: {exc}") from None
    if resp.status_code >= 400:
        raise _fail(_error_text(resp))
    table = Table("model", "owned by")
    for model in resp.json()["data"]:
        table.add_row(model["id"], model["owned_by"])
    _print_table(table)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="What the key is for.")],
    owner: Annotated[str, typer.Option(help="Who owns it.")] = "",
    scope: Annotated[list[Scope] | None, typer.Option(help="Scopes (repeatable).")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Allowed models (repeatable).")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute.")] = None,
    parallel: Annotated[int | None, typer.Option(min=1, help="Requests in flight.")] = None,
    team: Annotated[str | None, typer.Option(help="The owning team (name or id).")] = None,
    budget: Annotated[float | None, typer.Option(min=0.0, help="USD budget per period.")] = None,
    period: Annotated[BudgetPeriod | None, typer.Option(help="The budget's period.")] = None,
    group: Annotated[
        list[str] | None, typer.Option(help="Knowledge-base access groups (repeatable).")
    ] = None,
    expires: Annotated[
        datetime | None, typer.Option(help="Expiry (ISO 8601, UTC if no offset).")
    ] = None,
    cache: Annotated[
        bool | None,
        typer.Option(
            "--cache/--no-cache",
            help="Cache its deterministic requests by default, or never (unset: the setting).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once."""
    expires_at = expires.astimezone() if expires and expires.tzinfo is None else expires

    async def make(db: Database) -> NewKey:
        owner_team = await TeamRepository(db).find(team) if team else None
        if team and owner_team is None:
            raise InvalidRequestError(f"no team {team!r}", param="team")
        return await ApiKeyRepository(db, prefix=_settings(config).auth.key_prefix).create(
            name=name,
            owner=owner,
            scopes=scope or [Scope.INFERENCE],
            allowed_models=model,
            rpm=rpm,
            tpm=tpm,
            max_parallel=parallel,
            team=owner_team,
            expires_at=expires_at,
            budget_usd=budget,
            budget_period=period.value if period else None,
            access_groups=group or (),
            cache=cache,
        )

    async def create(db: Database, announced: Announcements) -> str:
        # Never the secret: what the key is and may do.
        detail = {"key_name": name, "team": team, "scopes": sorted(scope or [Scope.INFERENCE])}
        new = await audited(
            db, "cli keys create", KEYS_TARGET, make(db), detail=detail,
            target_of=lambda made: f"{KEYS_TARGET}/{made.record.id}",
        )  # fmt: skip
        announced(key_created(new.record))
        return new.secret

    def show(secret: str) -> None:
        out.print("Key created. It is shown only this once:")
        out.print(secret, highlight=False, soft_wrap=True)

    _with_store_announced(config, create, show)


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List keys (never their secrets)."""
    records = _with_store(config, lambda db: ApiKeyRepository(db).list())
    table = Table("name", "team", "prefix", "scopes", "models", "rpm", "tpm", "status")
    # The id is what `keys revoke` takes: never wrapped or cut, even in a narrow terminal.
    table.add_column("id", no_wrap=True, min_width=32)
    for key in records:
        table.add_row(
            key.name,
            key.team.name if key.team else "",
            key.display_prefix + "…",
            ",".join(sorted(key.scopes)),
            ",".join(sorted(key.allowed_models)) if key.allowed_models is not None else "all",
            str(key.rpm or "-"),
            str(key.tpm or "-"),
            _status(key),
            key.id,
        )
    _print_table(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `atrium keys list`).")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key; requests with it are refused from then on (every replica drops its
    cached copy when the bus is Redis: ``key.changed``)."""

    async def revoke(db: Database, announced: Announcements) -> ApiKey:
        record = await audited(
            db, "cli keys revoke", f"{KEYS_TARGET}/{key_id}", ApiKeyRepository(db).revoke(key_id),
            detail={},
        )  # fmt: skip
        announced(KeyChanged(key_id=record.id))
        return record

    _with_store_announced(
        config, revoke, lambda record: out.print(f"revoked {record.id} ({record.name})")
    )


@keys_app.command("cache")
def keys_cache(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `atrium keys list`).")],
    choice: Annotated[
        CacheChoice, typer.Argument(help="on: cached by default; off: never; default: setting.")
    ],
    config: ConfigOption = None,
) -> None:
    """Set whether a key's deterministic requests are answered from the response cache."""
    value = {CacheChoice.ON: True, CacheChoice.OFF: False, CacheChoice.DEFAULT: None}[choice]

    async def set_cache(db: Database, announced: Announcements) -> ApiKey:
        record = await audited(
            db, "cli keys cache", f"{KEYS_TARGET}/{key_id}",
            ApiKeyRepository(db).set_cache(key_id, value), detail={"cache": value},
        )  # fmt: skip
        announced(KeyChanged(key_id=record.id))  # replicas' cached copies hold the old choice
        return record

    _with_store_announced(
        config,
        set_cache,
        lambda record: out.print(f"cache {choice.value} for {record.id} ({record.name})"),
    )


def _print_table(table: Table) -> None:
    out.print(table, crop=False)


def _status(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= datetime.now(key.expires_at.tzinfo):
        return "expired"
    return "active"


@teams_app.command("create")
def teams_create(
    name: Annotated[str, typer.Argument(help="The team's name.")],
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute.")] = None,
    parallel: Annotated[int | None, typer.Option(min=1, help="Requests in flight.")] = None,
    budget: Annotated[float | None, typer.Option(min=0.0, help="USD budget per period.")] = None,
    period: Annotated[BudgetPeriod | None, typer.Option(help="The budget's period.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a team; its limits and budget apply to all its keys together."""

    async def create(db: Database) -> Team:
        made = TeamRepository(db).create(
            name=name,
            rpm=rpm,
            tpm=tpm,
            max_parallel=parallel,
            budget_usd=budget,
            budget_period=period.value if period else None,
        )
        detail = {"team_name": name, "rpm": rpm, "tpm": tpm, "budget_usd": budget}
        return await audited(
            db, "cli teams create", TEAMS_TARGET, made, detail=detail,
            target_of=lambda new: f"{TEAMS_TARGET}/{new.id}",
        )  # fmt: skip

    team = _with_store(config, create)
    out.print(f"created team {team.name} ({team.id})")


@teams_app.command("list")
def teams_list(config: ConfigOption = None) -> None:
    """List teams and their limits."""
    table = Table("name", "rpm", "tpm", "parallel")
    table.add_column("id", no_wrap=True, min_width=32)
    for team in _with_store(config, lambda db: TeamRepository(db).list()):
        table.add_row(
            team.name,
            str(team.rpm or "-"),
            str(team.tpm or "-"),
            str(team.max_parallel or "-"),
            team.id,
        )
    _print_table(table)


@app.command()
def usage(
    by: Annotated[
        UsageGroup, typer.Option("--by", help="Group by key, team, model or day.")
    ] = UsageGroup.KEY,
    start: Annotated[datetime | None, typer.Option(help="First day (YYYY-MM-DD).")] = None,
    end: Annotated[datetime | None, typer.Option(help="Last day (YYYY-MM-DD).")] = None,
    config: ConfigOption = None,
) -> None:
    """Requests, tokens and spend (works on the store directly)."""
    lines = _with_store(
        config,
        lambda db: UsageRepository(db).report(
            by.value, start=start.date() if start else None, end=end.date() if end else None
        ),
    )
    table = Table(by.value, "requests", "errors", "prompt tokens", "completion tokens", "USD")
    for line in lines:
        table.add_row(
            line.label,
            str(line.requests),
            str(line.errors),
            str(line.prompt_tokens),
            str(line.completion_tokens),
            f"{line.spend_usd:.4f}",
        )
    _print_table(table)


def _with_store(config: Path | None, work: Callable[[Database], Awaitable[T]]) -> T:
    settings = _settings(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> T:
        db = Database(settings.store_url)
        try:
            await db.migrate()
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except AtriumError as exc:
        raise _fail(exc.message) from None


def _with_store_announced(
    config: Path | None,
    work: Callable[[Database, Announcements], Awaitable[T]],
    show: Callable[[T], None],
) -> None:
    """``_with_store``, ``show`` its result, then publish the events ``work`` kept on the
    bus (see ``atrium._cli_bus``). The change stays made when announcing fails: the
    command says so on stderr and exits with 1, after showing what it made."""
    settings = _settings(config)
    announced = Announcements()
    show(_with_store(config, lambda db: work(db, announced)))
    try:
        asyncio.run(announce(settings, announced))
    except RedisError as exc:
        raise _fail(
            f"the change is stored, but announcing it on the bus failed ({exc}); other "
            f"replicas drop their cached copies within auth.cache_ttl_seconds "
            f"({settings.auth.cache_ttl_seconds:g} s)"
        ) from None


def _require_key(api_key: str | None) -> str:
    if not api_key:
        raise _fail("no API key: pass --api-key or set ATRIUM_API_KEY")
    return api_key


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _error_text(resp: httpx.Response) -> str:
    try:
        body: Any = resp.json()
        return f"{resp.status_code}: {body['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{resp.status_code}: {resp.text[:200]}"


def main() -> None:
    """Entry point of the ``atrium`` command."""
    app(prog_name="atrium")


if __name__ == "__main__":
    main()
