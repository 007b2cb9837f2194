"""Usage and spend per day, key, team and model: recorded from events, reported by group.

Events counted through ``add_events`` are counted once each: their ids go into
``usage_events_seen`` in the transaction that adds their sums, and an id found there
already (the bus delivers at least once) adds nothing. ``prune_seen`` drops old ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

from sqlalchemy import Select, String, delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from atrium.store.db import Database
from atrium.store.tables import ApiKeyRow, Base, TeamRow, UsageRow, UTCDateTime

GroupBy = Literal["key", "team", "user", "model", "day"]
"""What a report groups by; ``user`` is the owner of the key that made the requests."""

NO_OWNER = "(no owner)"

MAX_EVENT_ID: Final = 64
"""The longest event id kept in ``usage_events_seen``; a longer one is counted unchecked."""

_IDS_PER_INSERT: Final = 1000  # two parameters each, well within SQLite's limit
_SUMMED: Final = ("requests", "errors", "prompt_tokens", "completion_tokens", "spend_usd")


class UsageEventSeenRow(Base):
    """The id of an event whose usage is in the totals (kept for the bus's redelivery window)."""

    __tablename__ = "usage_events_seen"

    event_id: Mapped[str] = mapped_column(String(MAX_EVENT_ID), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


@dataclass(frozen=True)
class UsageRecord:
    """Requests to add to one day's row of a key and model."""

    day: date
    key_id: str
    team_id: str | None
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    spend_usd: float


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One finished request to count, under the id of the event that reported it."""

    event_id: str
    day: date
    key_id: str
    team_id: str | None
    model: str
    error: bool
    prompt_tokens: int
    completion_tokens: int
    spend_usd: float


@dataclass(frozen=True)
class UsageLine:
    """Totals for one group."""

    group: str
    label: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    spend_usd: float
    day: date | None = None
    """The day of these totals when the report is split by day, else None."""

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view for the admin API."""
        return {
            "group": self.group,
            "label": self.label,
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "spend_usd": round(self.spend_usd, 6),
            "day": None if self.day is None else self.day.isoformat(),
        }


class UsageRepository:
    """Adds requests to the daily totals and reports them."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert = sqlite_insert if db.is_sqlite else postgresql_insert

    async def add(self, records: Sequence[UsageRecord]) -> None:
        """Add to the daily rows in one transaction (upserts: safe across replicas)."""
        if not records:
            return
        async with self._db.session() as session, session.begin():
            await self._add_in(session, records)

    async def add_events(self, events: Sequence[UsageEvent]) -> int:
        """Add ``events`` to the daily rows in one transaction, each id once: an event whose
        id is in ``usage_events_seen`` already (or earlier in ``events``) adds nothing.
        Returns how many were counted."""
        if not events:
            return 0
        async with self._db.session() as session, session.begin():
            fresh = await self._unseen(session, events)
            await self._add_in(session, _summed(fresh))
        return len(fresh)

    async def prune_seen(self, before: datetime) -> int:
        """Forget the ids of events counted before ``before``; returns how many."""
        statement = delete(UsageEventSeenRow).where(UsageEventSeenRow.recorded_at < before)
        async with self._db.session() as session, session.begin():
            result = await session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def _unseen(
        self, session: AsyncSession, events: Sequence[UsageEvent]
    ) -> list[UsageEvent]:
        """Record the ids of ``events`` as seen; the events whose id was not seen before.

        ``ON CONFLICT DO NOTHING RETURNING`` decides it row by row in this transaction: on
        PostgreSQL a second transaction inserting the same id waits for the first and then
        gets nothing back, so two consumers racing on one event count it once.
        """
        by_id: dict[str, UsageEvent] = {}
        unchecked: list[UsageEvent] = []
        for event in events:
            if len(event.event_id) > MAX_EVENT_ID:
                unchecked.append(event)
            else:
                by_id.setdefault(event.event_id, event)
        if not by_id:
            return unchecked
        now = datetime.now(UTC)
        # In one order everywhere, so two writers with overlapping ids never deadlock.
        ids = sorted(by_id)
        new_ids: set[str] = set()
        for start in range(0, len(ids), _IDS_PER_INSERT):
            rows = [
                {"event_id": i, "recorded_at": now} for i in ids[start : start + _IDS_PER_INSERT]
            ]
            statement = (
                self._insert(UsageEventSeenRow)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(UsageEventSeenRow.event_id)
            )
            new_ids.update((await session.scalars(statement)).all())
        return [*unchecked, *(by_id[ident] for ident in by_id if ident in new_ids)]

    async def _add_in(self, session: AsyncSession, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        statement = self._insert(UsageRow)
        added = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["day", "key_id", "model"],
            set_={column: getattr(UsageRow, column) + getattr(added, column) for column in _SUMMED},
        )
        await session.execute(statement, [asdict(r) for r in records])

    async def report(
        self,
        group_by: GroupBy,
        *,
        start: date | None = None,
        end: date | None = None,
        per_day: bool = False,
    ) -> list[UsageLine]:
        """Totals per group between ``start`` and ``end`` (inclusive), biggest spend first;
        with ``per_day``, one line per group and day, oldest day first."""
        query = _grouped(group_by)
        if per_day:
            query = query.add_columns(UsageRow.day).group_by(UsageRow.day)
        if start is not None:
            query = query.where(UsageRow.day >= start)
        if end is not None:
            query = query.where(UsageRow.day <= end)
        async with self._db.session() as session:
            rows = (await session.execute(query)).all()
        lines = [_line(group_by, row) for row in rows]
        return sorted(
            lines,
            key=lambda line: (line.day or date.min, -line.spend_usd, -line.requests, line.group),
        )

    async def spend_since(self, subject: str, first_day: date | None) -> float:
        """USD spent by ``key:<id>`` or ``team:<id>`` from ``first_day`` (None: ever)."""
        kind, _, ident = subject.partition(":")
        column = UsageRow.key_id if kind == "key" else UsageRow.team_id
        query = select(func.coalesce(func.sum(UsageRow.spend_usd), 0.0)).where(column == ident)
        if first_day is not None:
            query = query.where(UsageRow.day >= first_day)
        async with self._db.session() as session:
            return float(await session.scalar(query) or 0.0)


def _summed(events: Sequence[UsageEvent]) -> list[UsageRecord]:
    """One record per day, key and model with the sums of ``events``."""
    sums: dict[tuple[date, str, str], list[Any]] = {}
    for e in events:
        slot = (e.day, e.key_id, e.model)
        totals = sums.setdefault(slot, [e.team_id, 0, 0, 0, 0, 0.0])
        totals[1] += 1
        totals[2] += e.error
        totals[3] += e.prompt_tokens
        totals[4] += e.completion_tokens
        totals[5] += e.spend_usd
    return [
        UsageRecord(day, key_id, team, model, requests, errors, prompt, completion, spend)
        for (day, key_id, model), (team, requests, errors, prompt, completion, spend)
        in sorted(sums.items(), key=lambda item: item[0])
    ]  # fmt: skip


def _line(group_by: GroupBy, row: Sequence[Any]) -> UsageLine:
    group, label, requests, errors, prompt, completion, spend = row[:7]
    day: date | None = row[7] if len(row) > 7 else None
    if group_by == "user":
        # Requests of a deleted key have no owner row at all; keys without one, "".
        group = "unknown" if group is None else group
        label = group or NO_OWNER
    elif group_by == "day":
        group = label = group.isoformat()
    return UsageLine(
        str(group), str(label or group), int(requests), int(errors), int(prompt),
        int(completion), float(spend), day,
    )  # fmt: skip


def _grouped(group_by: GroupBy) -> Select[Any, Any, Any, Any, Any, Any, Any]:
    totals = (
        func.sum(UsageRow.requests),
        func.sum(UsageRow.errors),
        func.sum(UsageRow.prompt_tokens),
        func.sum(UsageRow.completion_tokens),
        func.sum(UsageRow.spend_usd),
    )
    if group_by == "key":
        by_key = select(UsageRow.key_id, ApiKeyRow.name, *totals).outerjoin(
            ApiKeyRow, ApiKeyRow.id == UsageRow.key_id
        )
        return by_key.group_by(UsageRow.key_id, ApiKeyRow.name)
    if group_by == "team":
        by_team = select(UsageRow.team_id, TeamRow.name, *totals).outerjoin(
            TeamRow, TeamRow.id == UsageRow.team_id
        )
        return by_team.group_by(UsageRow.team_id, TeamRow.name)
    if group_by == "user":
        by_owner = select(ApiKeyRow.owner, ApiKeyRow.owner, *totals).outerjoin(
            ApiKeyRow, ApiKeyRow.id == UsageRow.key_id
        )
        return by_owner.group_by(ApiKeyRow.owner)
    column = UsageRow.model if group_by == "model" else UsageRow.day
    return select(column, column, *totals).group_by(column)
