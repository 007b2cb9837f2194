"""Announcing what a CLI command changed in the store on the bus, as the admin API does.

``atrium keys ...`` and ``atrium users ...`` work on the store directly; without an
announcement, replicas that cached a revoked key (or a user's ended sessions) would keep
serving it until their cache's TTL ran out. A command collects its events in an
:class:`Announcements` while it works and :func:`announce` publishes them once the change
is stored, on Redis Streams when ``bus.backend`` is redis. With the in-process bus there
is nobody to tell: a serving process's bus cannot be reached from another process.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from atrium.bus import Event
from atrium.bus.factory import build_bus
from atrium.core.settings import Settings

__all__ = ["Announcements", "announce"]


class Announcements:
    """The events a command's change makes, kept until the change is stored.

    Called like ``EventPublisher.publish_urgent`` (what the admin API's services are
    handed), so the same services announce the same events from the CLI.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> bool:
        """Keep ``event`` to publish after the change; always True (it is never dropped)."""
        self.events.append(event)
        return True


async def announce(settings: Settings, announcements: Announcements) -> int:
    """Publish the events kept in ``announcements`` on the configured Redis Streams bus
    (retried with backoff, ``bus.publish_attempts`` tries); the number published, 0 with
    the in-process bus. A Redis error is raised once the tries are spent."""
    if settings.bus.backend != "redis" or not announcements.events:
        return 0
    redis = aioredis.Redis.from_url(settings.redis.url)
    try:
        bus = build_bus(settings.bus, redis)
        for event in announcements.events:
            await bus.publish(event)
    finally:
        await redis.aclose()
    return len(announcements.events)
