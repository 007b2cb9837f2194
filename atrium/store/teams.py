"""Teams: they own keys, and their limits apply to all of their keys together."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.store.db import Database
from atrium.store.tables import TeamRow

BUDGET_PERIODS = ("day", "month", "total")
#: What ``TeamRepository.update`` may change.
UPDATABLE = ("rpm", "tpm", "max_parallel", "budget_usd", "budget_period")


def check_budget(budget_usd: float | None, budget_period: str | None) -> None:
    """A budget is a positive amount with a period, or nothing at all; else a 400."""
    if budget_usd is None and budget_period is None:
        return
    if budget_usd is None or budget_usd <= 0:
        raise InvalidRequestError("budget_usd must be above 0", param="budget_usd")
    if budget_period not in BUDGET_PERIODS:
        msg = f"budget_period must be one of {', '.join(BUDGET_PERIODS)}"
        raise InvalidRequestError(msg, param="budget_period")


@dataclass(frozen=True)
class Team:
    """A team as the rest of Atrium sees it."""

    id: str
    name: str
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    created_at: datetime
    budget_usd: float | None = None
    budget_period: str | None = None

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view for the admin API."""
        return {
            "id": self.id,
            "name": self.name,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_parallel": self.max_parallel,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
            "created_at": self.created_at.isoformat(),
        }


class TeamRepository:
    """Creates, finds and lists teams."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    async def create(
        self,
        *,
        name: str,
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
        budget_usd: float | None = None,
        budget_period: str | None = None,
    ) -> Team:
        """Create a team; a taken name or a bad limit is a 400 and nothing is written."""
        if not name.strip() or len(name) > 200:
            raise InvalidRequestError("name must be 1 to 200 characters", param="name")
        _check_limits(rpm=rpm, tpm=tpm, max_parallel=max_parallel)
        check_budget(budget_usd, budget_period)
        row = TeamRow(
            id=uuid.uuid4().hex,
            name=name,
            rpm=rpm,
            tpm=tpm,
            max_parallel=max_parallel,
            budget_usd=budget_usd,
            budget_period=budget_period,
            created_at=self._clock(),
        )
        msg = f"a team named {name!r} already exists"
        await self._db.insert(row, InvalidRequestError(msg, param="name"))
        return team_from_row(row)

    async def get(self, team_id: str) -> Team:
        """The team with this id; 404 when there is none."""
        async with self._db.session() as session:
            row = await session.get(TeamRow, team_id)
        if row is None:
            raise NotFoundError(f"no team with id {team_id!r}", param="team_id")
        return team_from_row(row)

    async def update(self, team_id: str, changes: Mapping[str, Any]) -> Team:
        """Change a team's limits or budget: the fields in ``changes`` (None removes a
        limit); a bad value is a 400 and nothing is written, an unknown team a 404."""
        unknown = set(changes) - set(UPDATABLE)
        if unknown:
            raise InvalidRequestError(f"cannot change {sorted(unknown)}", param=min(unknown))
        async with self._db.session() as session:
            row = await session.get(TeamRow, team_id)
            if row is None:
                raise NotFoundError(f"no team with id {team_id!r}", param="team_id")
            merged = {name: changes.get(name, getattr(row, name)) for name in UPDATABLE}
            _check_limits(rpm=merged["rpm"], tpm=merged["tpm"], max_parallel=merged["max_parallel"])
            check_budget(merged["budget_usd"], merged["budget_period"])
            for name, value in changes.items():
                setattr(row, name, value)
            await session.commit()
        return team_from_row(row)

    async def find(self, id_or_name: str) -> Team | None:
        """The team with this id or name, if any."""
        query = select(TeamRow).where((TeamRow.id == id_or_name) | (TeamRow.name == id_or_name))
        async with self._db.session() as session:
            row = await session.scalar(query)
        return None if row is None else team_from_row(row)

    async def list(self) -> builtins.list[Team]:
        """Every team, by name."""
        async with self._db.session() as session:
            rows = await session.scalars(select(TeamRow).order_by(TeamRow.name))
            return [team_from_row(row) for row in rows]


def _check_limits(**limits: int | None) -> None:
    for param, value in limits.items():
        if value is not None and value < 1:
            raise InvalidRequestError(f"{param} must be at least 1", param=param)


def team_from_row(row: TeamRow) -> Team:
    """The record of a stored team row."""
    return Team(
        id=row.id,
        name=row.name,
        rpm=row.rpm,
        tpm=row.tpm,
        max_parallel=row.max_parallel,
        created_at=row.created_at,
        budget_usd=row.budget_usd,
        budget_period=row.budget_period,
    )
