"""The audit trail's rows and repository: an append-only, hash-chained log.

Each row's ``hash`` is SHA-256 over the previous row's hash and the canonical JSON of
the row itself (its ``seq`` included), so changing, removing or reordering any row
breaks the chain from there on and :meth:`AuditRepository.verify` names the first
row that no longer fits.

Appends are serialised so two writers can never both chain onto the same row: within
a process by a lock, across processes on PostgreSQL by a transaction-scoped advisory
lock, and everywhere by ``seq`` being the primary key (a second row claiming the same
place fails to insert instead of forking the chain).

An entry may bring its own ``id`` (the audit consumer gives the id of the event it
records): an entry whose id is in the log already is skipped, checked under the same
lock and in the same transaction as the insert, so an event delivered twice (the bus
delivers at least once) is recorded once. The unique ``id`` column backs this up where
no lock spans processes (SQLite): the second insert fails and is retried, and then skips.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final
from uuid import uuid4

from sqlalchemy import JSON, BigInteger, Integer, String, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from atrium.store.db import Database
from atrium.store.tables import Base, UTCDateTime

GENESIS: Final = "0" * 64
"""The ``prev_hash`` of the first row."""

_APPEND_LOCK_ID: Final = 0x617564_6974  # any constant; the same in every process
_APPEND_ATTEMPTS: Final = 10
_VERIFY_BATCH: Final = 1000


class AuditRow(Base):
    """One audit entry as stored."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(300), nullable=False, index=True)
    target: Mapped[str] = mapped_column(String(1000), nullable=False)
    address: Mapped[str | None] = mapped_column(String(100), nullable=True)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    """What happened, as a writer reports it; the store adds the place in the chain."""

    action: str
    target: str
    outcome: str
    actor: str | None = None
    address: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str | None = None
    """The entry's id when the writer has one (an event's id, at most 32 characters):
    an entry whose id is stored already is not appended again. None: a fresh id."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A stored entry."""

    seq: int
    id: str
    at: datetime
    actor: str | None
    action: str
    target: str
    address: str | None
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_public(self) -> dict[str, Any]:
        """The JSON shape of the API and the export."""
        return {
            "seq": self.seq, "id": self.id, "at": self.at.isoformat(), "actor": self.actor,
            "action": self.action, "target": self.target, "address": self.address,
            "outcome": self.outcome, "detail": self.detail, "prev_hash": self.prev_hash,
            "hash": self.hash,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries a query returns (all given conditions hold), oldest first after
    ``after_seq``, at most ``limit``."""

    actor: str | None = None
    action: str | None = None
    """Actions starting with this."""
    target: str | None = None
    """Targets starting with this (a path, or ``/v1/admin/keys/<id>`` for one key)."""
    outcome: str | None = None
    """``success``, ``denied``, ``rejected`` or ``error``."""
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = 0
    limit: int = 100
    before_seq: int | None = None
    """Only entries before this seq (the next page of a newest-first listing)."""
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A row an auditor saw earlier (its seq and hash), e.g. the last line of an export.

    The chain alone cannot show rows cut off its end; checked against a head seen
    before, the row must still be there with the same hash.
    """

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``verify`` found: the rows checked and the first that breaks the chain."""

    checked: int
    first_bad_seq: int | None = None
    first_bad_id: str | None = None
    reason: str | None = None
    head: ChainHead | None = None
    """The last row verified (None for an empty log): keep it to check the next time."""

    @property
    def ok(self) -> bool:
        """Whether every row fits the chain."""
        return self.first_bad_seq is None

    def to_public(self) -> dict[str, Any]:
        """The JSON shape of the API."""
        return {
            "ok": self.ok, "checked": self.checked, "first_bad_seq": self.first_bad_seq,
            "first_bad_id": self.first_bad_id, "reason": self.reason,
            "head": None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash},
        }  # fmt: skip


def entry_hash(prev_hash: str, seq: int, entry_id: str, entry: NewAuditEntry) -> str:
    """SHA-256 (hex) chaining ``entry`` at place ``seq`` onto ``prev_hash``."""
    body = {
        "seq": seq, "id": entry_id, "at": _utc(entry.at).isoformat(), "actor": entry.actor,
        "action": entry.action, "target": entry.target, "address": entry.address,
        "outcome": entry.outcome, "detail": entry.detail,
    }  # fmt: skip
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


class AuditRepository:
    """Appends to, queries and verifies the audit log."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    async def append(self, entries: Sequence[NewAuditEntry]) -> list[AuditEntry]:
        """Chain ``entries`` onto the log in order, in one transaction; returns those
        appended (an entry whose ``id`` is stored already, or earlier in ``entries``, is
        skipped)."""
        if not entries:
            return []
        async with self._lock:
            for attempt in range(1, _APPEND_ATTEMPTS + 1):
                try:
                    return await self._append_once(entries)
                except IntegrityError:
                    # Another process without the advisory lock (SQLite) took the place.
                    if attempt == _APPEND_ATTEMPTS:
                        raise
                    await asyncio.sleep(random.uniform(0, 0.01 * attempt))  # noqa: S311
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _append_once(self, entries: Sequence[NewAuditEntry]) -> list[AuditEntry]:
        async with self._db.session() as session, session.begin():
            if not self._db.is_sqlite:
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": _APPEND_LOCK_ID}
                )
            fresh = await _unseen(session, entries)
            if not fresh:
                return []
            seq, prev = await _tail(session)
            chained = []
            for entry in fresh:
                seq += 1
                stored = _chained(seq, prev, entry)
                prev = stored.hash
                chained.append(stored)
            if self._db.is_sqlite:
                await _insert_sqlite(session, chained)
            else:
                # One bulk INSERT (asyncpg pipelines the rows), not an ORM object per entry.
                await session.execute(insert(AuditRow), [_values(e) for e in chained])
        return chained

    async def query(self, where: AuditFilter) -> list[AuditEntry]:
        """Entries matching ``where``, oldest first (or newest first when it asks)."""
        stmt = select(AuditRow).where(AuditRow.seq > where.after_seq)
        if where.before_seq is not None:
            stmt = stmt.where(AuditRow.seq < where.before_seq)
        if where.actor is not None:
            stmt = stmt.where(AuditRow.actor == where.actor)
        if where.action is not None:
            stmt = stmt.where(_starts_with(AuditRow.action, where.action))
        if where.target is not None:
            stmt = stmt.where(_starts_with(AuditRow.target, where.target))
        if where.outcome is not None:
            stmt = stmt.where(AuditRow.outcome == where.outcome)
        if where.since is not None:
            stmt = stmt.where(AuditRow.at >= where.since)
        if where.until is not None:
            stmt = stmt.where(AuditRow.at < where.until)
        order = AuditRow.seq.desc() if where.newest_first else AuditRow.seq
        stmt = stmt.order_by(order).limit(where.limit)
        async with self._db.session() as session:
            return [_entry(row) for row in (await session.scalars(stmt)).all()]

    async def export(self, where: AuditFilter) -> AsyncIterator[AuditEntry]:
        """Every entry matching ``where`` (its ``limit`` is the page size), oldest first."""
        after = where.after_seq
        while True:
            page = await self.query(_replace_after(where, after))
            for entry in page:
                yield entry
            if len(page) < where.limit:
                return
            after = page[-1].seq

    async def verify(self, expect: ChainHead | None = None) -> ChainReport:
        """Walk the whole log and recompute every link; the first broken row, if any.

        With ``expect`` (a row seen before) the log must still hold that row, with the
        same hash: rows cut off the end, or a chain rewritten up to there, are found too.
        """
        walked = await self._walk(expect.seq if expect is not None else None)
        if expect is None or not walked.report.ok:
            return walked.report
        return _against(walked, expect)

    async def _walk(self, keep: int | None) -> _Walked:
        """The chain report, and the hash and id of the row at seq ``keep`` if there is one."""
        checked, prev_seq, prev_hash = 0, 0, GENESIS
        kept: tuple[str, str] | None = None
        while True:
            async with self._db.session() as session:
                stmt = (
                    select(AuditRow)
                    .where(AuditRow.seq > prev_seq)
                    .order_by(AuditRow.seq)
                    .limit(_VERIFY_BATCH)
                )
                rows = (await session.scalars(stmt)).all()
            for row in rows:
                reason = _broken(row, prev_seq, prev_hash)
                if reason is not None:
                    return _Walked(ChainReport(checked, row.seq, row.id, reason), kept)
                checked, prev_seq, prev_hash = checked + 1, row.seq, row.hash
                if row.seq == keep:
                    kept = (row.hash, row.id)
            if len(rows) < _VERIFY_BATCH:
                head = ChainHead(prev_seq, prev_hash) if checked else None
                return _Walked(ChainReport(checked, head=head), kept)


@dataclass(frozen=True, slots=True)
class _Walked:
    report: ChainReport
    kept: tuple[str, str] | None  # (hash, id) of the row at the expected head's seq


def _against(walked: _Walked, expect: ChainHead) -> ChainReport:
    """The walk's report, or the break that the expected head shows."""
    report = walked.report
    last = report.head.seq if report.head is not None else 0
    if walked.kept is None:
        reason = (
            f"rows {last + 1} to {expect.seq} are missing: the log ends at seq {last} but "
            f"held seq {expect.seq} before (rows were cut off the end)"
        )
        return replace(report, first_bad_seq=last + 1, reason=reason)
    row_hash, row_id = walked.kept
    if row_hash != expect.hash:
        reason = (
            f"seq {expect.seq} no longer has the expected hash (the log was rewritten up to here)"
        )
        return replace(report, first_bad_seq=expect.seq, first_bad_id=row_id, reason=reason)
    return report


def _starts_with(column: Any, prefix: str) -> Any:
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"{pattern}%", escape="\\")


def _broken(row: AuditRow, prev_seq: int, prev_hash: str) -> str | None:
    if row.seq != prev_seq + 1:
        return f"row {prev_seq + 1} is missing (the next row is {row.seq})"
    if row.prev_hash != prev_hash:
        return "prev_hash does not match the previous row's hash (a row before it was altered)"
    recomputed = entry_hash(row.prev_hash, row.seq, row.id, _as_new(row))
    if recomputed != row.hash:
        return "the row's content does not match its hash (the row was altered)"
    return None


async def _tail(session: AsyncSession) -> tuple[int, str]:
    stmt = select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
    last = (await session.execute(stmt)).first()
    return (0, GENESIS) if last is None else (int(last[0]), str(last[1]))


async def _unseen(session: AsyncSession, entries: Sequence[NewAuditEntry]) -> list[NewAuditEntry]:
    """``entries`` less those whose id is stored already or came earlier in ``entries``."""
    ids = {entry.id for entry in entries if entry.id is not None}
    stored: set[str] = set()
    if ids:
        stmt = select(AuditRow.id).where(AuditRow.id.in_(ids))
        stored = set((await session.scalars(stmt)).all())
    fresh = []
    for entry in entries:
        if entry.id is not None:
            if entry.id in stored:
                continue
            stored.add(entry.id)
        fresh.append(entry)
    return fresh


def _chained(seq: int, prev: str, entry: NewAuditEntry) -> AuditEntry:
    entry_id = entry.id or uuid4().hex
    return AuditEntry(
        seq=seq, id=entry_id, at=_utc(entry.at), actor=entry.actor, action=entry.action,
        target=entry.target, address=entry.address, outcome=entry.outcome,
        detail=entry.detail, prev_hash=prev, hash=entry_hash(prev, seq, entry_id, entry),
    )  # fmt: skip


async def _insert_sqlite(session: AsyncSession, chained: Sequence[AuditEntry]) -> None:
    """Insert ``chained`` on SQLite as one statement over one JSON parameter.

    Not an ``executemany``: the driver's thread binds each row with the GIL, and an event
    loop busy with requests holds it, so every row waited a switch interval (500 rows took
    1.5 s at 1,000 requests/s and the recorder's queue overflowed). Here the rows cross as
    one JSON array that SQLite unpacks itself (``json_each``), each value first turned
    into what SQLAlchemy would store for its column, so the rows are the same either way.
    """
    connection = await session.connection()
    dialect = connection.dialect
    columns = list(AuditRow.__table__.columns)
    processors = [column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns]
    rows = []
    for entry in chained:
        values = _values(entry)
        rows.append([
            values[column.name] if process is None else process(values[column.name])
            for column, process in zip(columns, processors, strict=True)
        ])  # fmt: skip
    names = ", ".join(column.name for column in columns)
    picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
    # Only the table's own column names are formatted in; the rows are bound.
    table = AuditRow.__tablename__
    statement = f"INSERT INTO {table} ({names}) SELECT {picks} FROM json_each(:rows)"  # noqa: S608
    await session.execute(text(statement), {"rows": json.dumps(rows, ensure_ascii=False)})


def _values(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq, "id": entry.id, "at": entry.at, "actor": entry.actor,
        "action": entry.action, "target": entry.target, "address": entry.address,
        "outcome": entry.outcome, "detail": entry.detail, "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }  # fmt: skip


def _as_new(row: AuditRow) -> NewAuditEntry:
    return NewAuditEntry(
        action=row.action, target=row.target, outcome=row.outcome, actor=row.actor,
        address=row.address, detail=row.detail, at=row.at,
    )  # fmt: skip


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq, id=row.id, at=row.at, actor=row.actor, action=row.action,
        target=row.target, address=row.address, outcome=row.outcome, detail=row.detail,
        prev_hash=row.prev_hash, hash=row.hash,
    )  # fmt: skip


def _replace_after(where: AuditFilter, after: int) -> AuditFilter:
    # An export pages forward by seq, whatever order the filter asked for.
    return replace(where, after_seq=after, newest_first=False)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
