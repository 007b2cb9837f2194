"""Releases watchers reported: each (watcher, key) is claimed once, across restarts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from atrium.store.db import Database
from atrium.store.tables import ReleaseDetectionRow


@dataclass(frozen=True, slots=True)
class DetectionRecord:
    """One detection as stored."""

    id: str
    watcher: str
    key: str
    payload: dict[str, Any]
    detected_at: datetime


class DetectionRepository:
    """The ledger that deduplicates detections (shared by every worker on one database)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, watcher: str, key: str, payload: dict[str, Any]) -> bool:
        """Record a detection; False when this watcher already reported this key."""
        row = ReleaseDetectionRow(
            id=f"det_{uuid.uuid4().hex}",
            watcher=watcher,
            key=key,
            payload=payload,
            detected_at=datetime.now(UTC),
        )
        async with self._db.session() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return False
        return True

    async def seen(self, watcher: str, key: str) -> bool:
        """Whether this watcher reported this key before."""
        async with self._db.session() as session:
            found = await session.scalar(
                select(ReleaseDetectionRow.id).where(
                    ReleaseDetectionRow.watcher == watcher, ReleaseDetectionRow.key == key
                )
            )
        return found is not None

    async def recent(self, limit: int = 100) -> list[DetectionRecord]:
        """The latest detections, newest first."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(ReleaseDetectionRow)
                .order_by(ReleaseDetectionRow.detected_at.desc())
                .limit(limit)
            )
            return [
                DetectionRecord(r.id, r.watcher, r.key, dict(r.payload), r.detected_at)
                for r in rows
            ]
