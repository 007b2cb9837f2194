"""Usage accounting off the hot path: request.completed events into the daily totals."""

from __future__ import annotations

import os
import socket

from atrium.bus import EventBus, RequestCompleted, Subscription
from atrium.store.usage import UsageRecord, UsageRepository

GROUP = "usage"


class UsageRecorder:
    """A bus consumer that adds every finished request to the usage table.

    One consumer group for the whole deployment: with Redis Streams each event is
    counted once however many replicas run, and a replica that dies mid-event
    leaves it pending rather than lost.
    """

    def __init__(self, bus: EventBus, usage: UsageRepository) -> None:
        self._bus = bus
        self._usage = usage
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Join the consumer group."""
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._subscription = await self._bus.subscribe(
            RequestCompleted, GROUP, consumer, self.record
        )

    async def close(self) -> None:
        """Leave the consumer group."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    async def record(self, event: RequestCompleted) -> None:
        """Count one request (requests without a key, refused at the door, are not)."""
        if event.key_id is None:
            return
        await self._usage.record(
            UsageRecord(
                day=event.occurred_at.date(),
                key_id=event.key_id,
                team_id=event.team_id,
                model=event.model,
                ok=event.status < 400,
                prompt_tokens=event.prompt_tokens,
                completion_tokens=event.completion_tokens,
                spend_usd=event.cost_usd,
            )
        )
