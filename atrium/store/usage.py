"""Usage and spend per day, key, team and model: recorded from events, reported by group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from atrium.store.db import Database
from atrium.store.tables import ApiKeyRow, TeamRow, UsageRow

GroupBy = Literal["key", "team", "user", "model", "day"]
"""What a report groups by; ``user`` is the owner of the key that made the requests."""

NO_OWNER = "(no owner)"


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
        statement = self._insert(UsageRow)
        added = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["day", "key_id", "model"],
            set_={
                column: getattr(UsageRow, column) + getattr(added, column)
                for column in (
                    "requests",
                    "errors",
                    "prompt_tokens",
                    "completion_tokens",
                    "spend_usd",
                )
            },
        )
        async with self._db.session() as session:
            await session.execute(statement, [asdict(r) for r in records])
            await session.commit()

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
