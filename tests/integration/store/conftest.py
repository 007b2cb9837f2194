"""Fixtures for the store's tests. The migrated ``database`` on SQLite and PostgreSQL comes
from ``tests/integration/conftest.py``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest


class StepClock:
    """A clock that moves one second forward each time it is read."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(seconds=1)
        return current


@pytest.fixture
def clock() -> Callable[[], datetime]:
    """A deterministic clock starting at 2030-01-01T00:00:00Z."""
    return StepClock(datetime(2030, 1, 1, tzinfo=UTC))
