"""Routes set through the admin API, kept so that every replica and restart sees them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from atrium.store.db import Database
from atrium.store.tables import RouteRow


class RouteRepository:
    """Stores route specs by name (as JSON; the caller validates them)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, name: str, spec: dict[str, Any]) -> None:
        """Create or replace a route."""
        async with self._db.session() as session:
            row = await session.get(RouteRow, name)
            if row is None:
                session.add(RouteRow(name=name, spec=spec, updated_at=datetime.now(UTC)))
            else:
                row.spec, row.updated_at = spec, datetime.now(UTC)
            await session.commit()

    async def delete(self, name: str) -> bool:
        """Forget a route; False when there was none."""
        async with self._db.session() as session:
            result = await session.execute(delete(RouteRow).where(RouteRow.name == name))
            await session.commit()
        return bool(getattr(result, "rowcount", 0))

    async def all(self) -> dict[str, dict[str, Any]]:
        """Every stored route, by name."""
        async with self._db.session() as session:
            rows = await session.scalars(select(RouteRow).order_by(RouteRow.name))
            return {row.name: dict(row.spec) for row in rows}
