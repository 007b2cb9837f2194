"""What operators see of a bus: streams, consumer groups, dead letters; and what they can do.

Both backends implement :class:`BusAdmin`, so the admin API and ``atrium events``
work the same on the embedded bus and on Redis Streams.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from atrium.bus.base import EventBus


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One consumer group of a stream."""

    name: str
    consumers: int
    pending: int  # delivered, not yet acknowledged
    lag: int | None  # entries not yet delivered to the group (None: Redis cannot tell)
    last_delivered_id: str
    # Consumers seen polling within the reclaim idle time (the others are taken as gone).
    live_consumers: int = 0


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One event type's stream and its groups."""

    topic: str
    length: int
    groups: list[GroupInfo] = field(default_factory=list)

    def to_public(self) -> dict[str, Any]:
        """The JSON shape of the admin API."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a group gave up on, with why, how often it was tried and the event itself.

    ``data`` is the original entry's JSON as published (it may not parse: a poison entry
    is kept as it came); ``entry_id`` its id in the topic's stream.
    """

    id: str
    topic: str
    group: str
    entry_id: str
    event_type: str
    version: str
    data: str
    reason: str
    attempts: int
    consumer: str
    failed_at: datetime

    def to_public(self) -> dict[str, Any]:
        """The JSON shape of the admin API."""
        public = asdict(self)
        public["failed_at"] = self.failed_at.isoformat()
        return public


def failed_now() -> datetime:
    """The time a dead letter is stamped with."""
    return datetime.now(UTC)


@runtime_checkable
class BusAdmin(Protocol):
    """Operations on a bus's streams and dead letters (the admin API and CLI call these)."""

    async def streams(self) -> list[StreamInfo]:
        """Every stream with its length, groups, pending counts and lag."""

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter; ``NotFoundError`` when there is none with that id."""

    async def retry_dead_letter(self, dead_letter_id: str) -> str:
        """Deliver the event again to the group that gave up on it (only that group).

        Removes the dead letter; returns the new entry's id.
        """

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Drop a dead letter; ``NotFoundError`` when there is none with that id."""

    async def replay(self, topic: str, group: str, from_id: str) -> None:
        """Deliver ``topic``'s retained events after ``from_id`` to ``group`` again.

        ``from_id`` is an entry id, ``0`` for everything retained, or a time in
        milliseconds since the epoch. A group that does not exist yet is created there,
        so a new consumer can start from the past.
        """


@runtime_checkable
class ManagedBus(EventBus, BusAdmin, Protocol):
    """An event bus operators can inspect and repair: what ``build_bus`` returns."""
