"""Usage accounting off the hot path: request.completed events into the daily totals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import date

from sqlalchemy.exc import SQLAlchemyError

from atrium.bus import EventBus, RequestCompleted, Subscription
from atrium.store.usage import UsageRecord, UsageRepository

GROUP = "usage"

log = logging.getLogger("atrium.gateway.usage")


@dataclass
class _Totals:
    team_id: str | None = None
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend_usd: float = 0.0


class UsageRecorder:
    """A bus consumer that adds every finished request to the usage table.

    Events are summed in memory per day, key and model and written once a
    ``flush_seconds`` in one transaction: one write per request could not keep up
    with the gateway. One consumer group serves the whole deployment, so each
    event is counted once however many replicas run. What is summed but not yet
    written (at most ``flush_seconds`` of traffic) is lost if the process dies.

    Adding to a total cannot be repeated, yet this consumer is not wrapped in
    ``once_per_event``: an event is acknowledged when it is summed, so it comes again
    only if the consumer dies in the instant between the two, while the sums it loses
    are the larger gap, and two Redis round trips per request would slow the one
    consumer that follows every request. Closing both needs the audit consumer's shape:
    acknowledging after the commit, with the event ids kept in the same transaction.
    """

    def __init__(
        self, bus: EventBus, usage: UsageRepository, *, flush_seconds: float = 1.0
    ) -> None:
        self._bus = bus
        self._usage = usage
        self._flush_seconds = flush_seconds
        self._pending: dict[tuple[date, str, str], _Totals] = {}
        self._subscription: Subscription | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the consumer group and start writing totals."""
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._subscription = await self._bus.subscribe(
            RequestCompleted, GROUP, consumer, self.record
        )
        self._flusher = asyncio.create_task(self._flush_forever(), name="atrium.usage.flush")

    async def close(self) -> None:
        """Leave the group and write what is still summed."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()

    async def record(self, event: RequestCompleted) -> None:
        """Count one request (requests without a key, refused at the door, are not)."""
        if event.key_id is None:
            return
        slot = (event.occurred_at.date(), event.key_id, event.model)
        totals = self._pending.setdefault(slot, _Totals(team_id=event.team_id))
        totals.requests += 1
        totals.errors += event.status >= 400
        totals.prompt_tokens += event.prompt_tokens
        totals.completion_tokens += event.completion_tokens
        totals.spend_usd += event.cost_usd

    async def flush(self) -> None:
        """Write the sums so far; on a database error keep them for the next try."""
        pending, self._pending = self._pending, {}
        records = [
            UsageRecord(
                day=day,
                key_id=key_id,
                team_id=t.team_id,
                model=model,
                requests=t.requests,
                errors=t.errors,
                prompt_tokens=t.prompt_tokens,
                completion_tokens=t.completion_tokens,
                spend_usd=t.spend_usd,
            )
            for (day, key_id, model), t in pending.items()
        ]
        try:
            await self._usage.add(records)
        except (SQLAlchemyError, OSError):
            log.exception(
                "usage: writing %d rows failed; retrying with the next flush", len(records)
            )
            for slot, totals in pending.items():
                self._merge(slot, totals)

    def _merge(self, slot: tuple[date, str, str], totals: _Totals) -> None:
        current = self._pending.setdefault(slot, _Totals(team_id=totals.team_id))
        current.requests += totals.requests
        current.errors += totals.errors
        current.prompt_tokens += totals.prompt_tokens
        current.completion_tokens += totals.completion_tokens
        current.spend_usd += totals.spend_usd

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()
