"""Usage accounting off the hot path: request.completed events into the daily totals."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from atrium.bus import EventBus, RequestCompleted, Subscription
from atrium.bus.base import cancel_and_wait, group_commit_wait
from atrium.store.usage import UsageEvent, UsageRecord, UsageRepository

GROUP = "usage"

#: Events of ``request.completed`` the consumer has waiting for their commit at once (on a
#: durable bus): one transaction counts them all.
CONSUMER_CONCURRENCY = 100

#: How long the ids of counted events are kept against redelivery: longer than an event
#: stays pending, and than a dead letter is usually left before it is retried.
SEEN_RETENTION = timedelta(days=7)

log = logging.getLogger("atrium.gateway.usage")


@dataclass
class _Totals:
    team_id: str | None = None
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend_usd: float = 0.0


@dataclass(slots=True)
class _Waiting:
    """An event a handler handed over on a durable bus, and the future that handler awaits."""

    event: UsageEvent
    committed: asyncio.Future[None]

    def settle(self) -> None:
        if not self.committed.done():
            self.committed.set_result(None)


class UsageRecorder:
    """A bus consumer that adds every finished request to the usage table.

    Requests are written in batches, one transaction each: one write per request could
    not keep up with the gateway. One consumer group serves the whole deployment, so
    each event is counted by one replica however many run.

    On a ``durable`` bus (Redis Streams) nothing the bus has acknowledged is lost: the
    handler (``record``) returns only once a transaction that counts its event has
    committed, so an event whose consumer dies first stays pending and another consumer
    takes it over. The consumer hands up to ``CONSUMER_CONCURRENCY`` events at once and
    the writer commits what is waiting ``commit_delay_seconds`` after a handler starts
    to wait (a group commit), so the writes stay batched. Each event is counted once:
    its id goes into ``usage_events_seen`` in the transaction that adds its sums, and an
    id already there adds nothing (an event is delivered again when its consumer dies
    after the commit but before the acknowledgement, or when it is taken over while the
    write is slow). Ids older than ``seen_retention`` are pruned every
    ``prune_every_seconds``. While the database is down the handlers wait and their
    events stay pending.

    On the in-process bus an event dies with the process whether or not it was
    acknowledged, so there ``record`` adds the request to sums in memory and returns;
    they are written every ``flush_seconds`` (at most that much traffic is lost if the
    process dies) and are not checked against seen ids (that bus delivers an event again
    only when its handler raised, and this one does not).
    """

    def __init__(
        self,
        bus: EventBus,
        usage: UsageRepository,
        *,
        flush_seconds: float = 1.0,
        commit_delay_seconds: float = 0.02,
        seen_retention: timedelta = SEEN_RETENTION,
        prune_every_seconds: float = 3600.0,
    ) -> None:
        self._bus = bus
        self._usage = usage
        self._flush_seconds = flush_seconds
        self._commit_delay_seconds = commit_delay_seconds
        self._seen_retention = seen_retention
        self._prune_every_seconds = prune_every_seconds
        self._wait_for_commit = bus.durable
        self._pending: dict[tuple[date, str, str], _Totals] = {}
        self._events: list[_Waiting] = []
        self._waiting = asyncio.Event()  # a handler waits for a commit: write soon
        self._subscription: Subscription | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Join the consumer group and start writing totals."""
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        # Handlers that wait for their commit are many at once, to share it.
        concurrency = CONSUMER_CONCURRENCY if self._wait_for_commit else 1
        self._subscription = await self._bus.subscribe(
            RequestCompleted, GROUP, consumer, self.record, concurrency=concurrency
        )
        self._flusher = asyncio.create_task(self._flush_forever(), name="atrium.usage.flush")

    async def close(self) -> None:
        """Leave the group and write what is still summed or waiting."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        if self._flusher is not None:
            await cancel_and_wait(self._flusher)
            self._flusher = None
        await self.flush()

    async def record(self, event: RequestCompleted) -> None:
        """Count one request (requests without a key, refused at the door, are not); on a
        durable bus, return once it is committed."""
        if event.key_id is None:
            return
        if not self._wait_for_commit:
            self._add(event.key_id, event)
            return
        committed = asyncio.get_running_loop().create_future()
        self._events.append(_Waiting(usage_event(event), committed))
        self._waiting.set()
        await committed

    def _add(self, key_id: str, event: RequestCompleted) -> None:
        slot = (event.occurred_at.date(), key_id, event.model)
        totals = self._pending.setdefault(slot, _Totals(team_id=event.team_id))
        totals.requests += 1
        totals.errors += event.status >= 400
        totals.prompt_tokens += event.prompt_tokens
        totals.completion_tokens += event.completion_tokens
        totals.spend_usd += event.cost_usd

    async def flush(self) -> None:
        """Write the sums and waiting events so far; on a database error keep them for
        the next try."""
        await self._write()

    async def _write(self) -> bool:
        """``flush``; whether every write succeeded."""
        sums_written = await self._write_sums()
        events_written = await self._write_events()
        return sums_written and events_written

    async def _write_events(self) -> bool:
        batch, self._events = self._events, []
        if not batch:
            return True
        try:
            await self._usage.add_events([waiting.event for waiting in batch])
        except (SQLAlchemyError, OSError):
            log.exception("usage: counting %d events failed; retrying", len(batch))
            self._events = batch + self._events
            return False
        for waiting in batch:
            waiting.settle()
        return True

    async def _write_sums(self) -> bool:
        pending, self._pending = self._pending, {}
        if not pending:
            return True
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
            return False
        return True

    def _merge(self, slot: tuple[date, str, str], totals: _Totals) -> None:
        current = self._pending.setdefault(slot, _Totals(team_id=totals.team_id))
        current.requests += totals.requests
        current.errors += totals.errors
        current.prompt_tokens += totals.prompt_tokens
        current.completion_tokens += totals.completion_tokens
        current.spend_usd += totals.spend_usd

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            await group_commit_wait(self._waiting, self._flush_seconds, self._commit_delay_seconds)
            written = await self._write()
            if self._wait_for_commit and loop.time() >= next_prune:
                next_prune = loop.time() + self._prune_every_seconds
                await self._prune()
            if not written:
                await asyncio.sleep(self._flush_seconds)  # the database failed: not at once

    async def _prune(self) -> None:
        try:
            await self._usage.prune_seen(datetime.now(UTC) - self._seen_retention)
        except (SQLAlchemyError, OSError):
            log.exception("usage: pruning the seen event ids failed; trying again later")


def usage_event(event: RequestCompleted) -> UsageEvent:
    """What ``event`` adds to the usage totals (for an event with a key)."""
    if event.key_id is None:
        raise ValueError("a request without a key is not counted")
    return UsageEvent(
        event_id=event.id, day=event.occurred_at.date(), key_id=event.key_id,
        team_id=event.team_id, model=event.model, error=event.status >= 400,
        prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
        spend_usd=event.cost_usd,
    )  # fmt: skip
