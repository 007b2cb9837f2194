"""``atrium audit ...``: prove the audit trail's hash chain, export it as JSON lines.

Both commands work on the store directly (like ``atrium keys``), so they need the
settings' store URL, not a running server: an auditor checks the database itself.
The chain alone cannot show rows cut off its end, so ``verify`` takes a head seen
before (``--expect-seq``/``--expect-hash``, or ``--against`` an earlier export) and
prints the current head to keep for next time.

:func:`audited` records what the store-direct commands (``atrium keys ...``) change,
as ``cli:<os user>`` from ``local``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from atrium._cli import ConfigOption, err, fail, out
from atrium.audit.recorder import outcome_of
from atrium.core.errors import AtriumError, status_of
from atrium.core.settings import load_settings
from atrium.store import Database
from atrium.store.audit import (
    AuditFilter,
    AuditRepository,
    ChainHead,
    ChainReport,
    NewAuditEntry,
)

__all__ = ["audit_app", "audited"]

T = TypeVar("T")


class Outcome(StrEnum):
    """An entry's outcome."""

    SUCCESS = "success"
    DENIED = "denied"
    REJECTED = "rejected"
    ERROR = "error"


audit_app = typer.Typer(help="Audit trail (works on the store directly).", no_args_is_help=True)


@audit_app.command("verify")
def verify(
    expect_seq: Annotated[
        int | None, typer.Option(min=1, help="A row's seq seen before (with --expect-hash).")
    ] = None,
    expect_hash: Annotated[str | None, typer.Option(help="That row's hash, as seen then.")] = None,
    against: Annotated[
        Path | None,
        typer.Option(help="An earlier export (JSON lines): its last row must still be there."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Recompute the hash chain; name the first row that breaks it (exit 1) if any.

    Given a head seen before, rows cut off the end (or a chain rewritten up to it) are
    found too.
    """
    expect = _expected_head(expect_seq, expect_hash, against)
    report: ChainReport = _with_store(config, lambda db: AuditRepository(db).verify(expect))
    if report.ok:
        head = report.head
        tail = "" if head is None else f"; head: --expect-seq {head.seq} --expect-hash {head.hash}"
        out.print(f"audit chain intact: {report.checked} entries verified{tail}", markup=False)
        return
    row = f" (id {report.first_bad_id})" if report.first_bad_id else ""
    err.print(
        f"audit chain broken at seq {report.first_bad_seq}{row}: "
        f"{report.reason}; {report.checked} entries verified",
        markup=False,
    )
    raise typer.Exit(code=1)


def _expected_head(seq: int | None, hash_: str | None, against: Path | None) -> ChainHead | None:
    if (seq is None) != (hash_ is None):
        raise fail("--expect-seq and --expect-hash go together")
    if against is not None:
        if seq is not None:
            raise fail("give --against or --expect-seq/--expect-hash, not both")
        return _last_exported(against)
    if seq is None or hash_ is None:
        return None
    if len(hash_) != 64 or any(c not in "0123456789abcdef" for c in hash_):
        raise fail("--expect-hash is 64 lowercase hex digits (a row's hash)")
    return ChainHead(seq, hash_)


def _last_exported(path: Path) -> ChainHead:
    """The last row of an export: the head the log had (at least) when it was taken."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        last = json.loads(lines[-1]) if lines else None
        return ChainHead(int(last["seq"]), str(last["hash"]))  # type: ignore[index]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(f"cannot read the last exported row of {path}: {exc}") from None


@audit_app.command("export")
def export(
    *,
    actor: Annotated[str | None, typer.Option(help="Only this key id's entries.")] = None,
    action: Annotated[str | None, typer.Option(help="Only actions starting with this.")] = None,
    target: Annotated[str | None, typer.Option(help="Only targets starting with this.")] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="Only entries with this outcome.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Entries at or after this time.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Entries before this time.")] = None,
    config: ConfigOption = None,
) -> None:
    """Every matching entry as one JSON object a line, oldest first."""
    where = AuditFilter(
        actor=actor, action=action, target=target, outcome=outcome.value if outcome else None,
        since=since, until=until, limit=1000,
    )  # fmt: skip

    async def dump(db: Database) -> int:
        count = 0
        async for entry in AuditRepository(db).export(where):
            typer.echo(json.dumps(entry.to_public(), ensure_ascii=False))
            count += 1
        return count

    _with_store(config, dump)


def _with_store(config: Path | None, work: Callable[[Database], Awaitable[T]]) -> T:
    try:
        settings = load_settings(config)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        raise fail(f"invalid settings: {exc}") from None

    async def run() -> T:
        db = Database(settings.store_url)
        try:
            await db.migrate()
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


async def audited(
    db: Database,
    action: str,
    target: str,
    work: Awaitable[T],
    *,
    detail: dict[str, Any],
    target_of: Callable[[T], str] | None = None,
) -> T:
    """Run ``work`` (a change made in the store directly) and append it to the audit trail.

    The actor is ``cli:<os user>``, the address ``local``; a refused change is recorded
    with its outcome and message, then raised. ``target_of`` names the target from the
    result (a key created gets its id only then).
    """
    try:
        result = await work
    except AtriumError as exc:
        failed = {**detail, "error": exc.message}
        await _append(db, action, target, outcome_of(status_of(exc)), failed)
        raise
    await _append(db, action, target_of(result) if target_of else target, "success", detail)
    return result


async def _append(
    db: Database, action: str, target: str, outcome: str, detail: dict[str, Any]
) -> None:
    entry = NewAuditEntry(
        action=action, target=target, outcome=outcome, actor=f"cli:{_os_user()}",
        address="local", detail=detail,
    )  # fmt: skip
    await AuditRepository(db).append([entry])


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"
