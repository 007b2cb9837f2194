"""Writing audit entries off the hot path: a queue drained in batches, and the bus consumer
that turns every finished inference request into an entry."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy.exc import SQLAlchemyError

from atrium.bus import EventBus, RequestCompleted, Subscription
from atrium.bus.base import cancel_and_wait, group_commit_wait
from atrium.gateway.guardrails import HOLD_BACK_CHARS, redact_pii
from atrium.gateway.transcript import Transcript
from atrium.store.audit import AuditRepository, NewAuditEntry

GROUP = "audit"

_MAX_ID = 32  # the audit log's id column; every event id the bus makes fits

log = logging.getLogger("atrium.audit")

# An entry, or what makes one when the writer gets to it (work kept off the request path).
_Queued = NewAuditEntry | Callable[[], NewAuditEntry]

#: Events of ``request.completed`` the consumer has waiting for their commit at once: one
#: transaction writes them all, as ``record_nowait``'s entries are written in batches.
CONSUMER_CONCURRENCY = 100


@dataclass(slots=True)
class _Item:
    """A queued entry and, for one the bus handed over, the future its handler awaits."""

    entry: _Queued
    committed: asyncio.Future[None] | None = None

    def settle(self) -> None:
        if self.committed is not None and not self.committed.done():
            self.committed.set_result(None)


class AuditRecorder:
    """Queues entries and appends them to the chain in batches from a background task.

    ``record_nowait`` never waits: a request never pays for the audit write. When the
    queue is full the entry is dropped and counted in ``dropped`` (with an error log);
    a failed write is retried with the next batch. Entries still queued when the
    process dies (at most ``flush_seconds`` worth) are lost.

    With ``bus`` given, ``start`` also joins the ``audit`` consumer group on
    ``request.completed`` and records each request's model, key, tokens and latency
    (never its prompt or completion: the event carries none). On a ``durable`` bus
    (Redis Streams) nothing the bus has acknowledged is lost: the handler
    (``record_request``) returns only once its entry is committed, so an event whose
    consumer dies first stays pending and another consumer takes it over. Batching is
    kept: the consumer hands up to ``CONSUMER_CONCURRENCY`` events at once, and the
    writer commits what is queued ``commit_delay_seconds`` after a handler starts to
    wait (a group commit: the delay gathers the events that arrive meanwhile), not after
    ``flush_seconds``. While the database is down the handlers wait and their events stay
    pending (the bus's heartbeat keeps them claimed); a consumer that stops leaves them
    to be delivered again. On the in-process bus an event dies with the process whether
    or not it was acknowledged, so there the handler queues the entry and returns, and
    it is written with the next batch.

    Exactly once: an event can still be delivered twice (its consumer dies after the
    commit but before the acknowledgement, or it is taken over while the write is slow),
    so the entry takes the event's id as its own and the repository skips an id it has
    stored already, checked in the transaction that appends (under the chain's lock on
    PostgreSQL; SQLite's unique id column turns a race into a retry that then skips). A
    Redis "seen" marker (``IdempotentHandler``) would be weaker here: it is set after
    the commit, so a crash between the two would write the entry twice; the database
    is the one place where "written" and "not written again" are decided together.

    With ``max_text_chars`` set (``audit.record_text``), the gateway also hands it each
    chat and completion request's transcript (``record_transcript``): the entry is then
    written here, by the replica that served the request, with the prompt and completion
    text redacted of personal data and cut to ``max_text_chars`` each, and the consumer
    skips that request's event.
    """

    def __init__(
        self,
        repo: AuditRepository,
        *,
        bus: EventBus | None = None,
        flush_seconds: float = 0.5,
        max_queue: int = 10_000,
        batch_size: int = 500,
        max_text_chars: int = 0,
        commit_delay_seconds: float = 0.02,
    ) -> None:
        self._repo = repo
        self._bus = bus
        self._flush_seconds = flush_seconds
        self._commit_delay_seconds = commit_delay_seconds
        self._wait_for_commit = bus is not None and bus.durable
        self._batch_size = batch_size
        self._max_text_chars = max_text_chars
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._retry: list[tuple[NewAuditEntry, _Item]] = []
        self._waiting = asyncio.Event()  # a handler waits for a commit: write now
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self.dropped = 0
        self.written = 0

    async def start(self) -> None:
        """Start the writer and, with a bus, the ``request.completed`` consumer."""
        if self._task is None:
            self._task = asyncio.create_task(self._write_forever(), name="atrium.audit.writer")
        if self._bus is not None and self._subscription is None:
            consumer = f"{socket.gethostname()}-{os.getpid()}"
            # Handlers that wait for their commit are many at once, to share it.
            concurrency = CONSUMER_CONCURRENCY if self._wait_for_commit else 1
            self._subscription = await self._bus.subscribe(
                RequestCompleted, GROUP, consumer, self.record_request, concurrency=concurrency
            )

    async def close(self) -> None:
        """Stop consuming, then write what is queued."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.flush()

    @property
    def max_text_chars(self) -> int:
        """Characters of prompt and of completion kept in an inference entry."""
        return self._max_text_chars

    def record_nowait(self, entry: NewAuditEntry) -> bool:
        """Queue ``entry``; False (and ``dropped`` + 1) when the queue is full."""
        return self._queue_nowait(_Item(entry), entry.action, entry.target)

    def record_transcript(self, event: RequestCompleted, transcript: Transcript) -> None:
        """Queue the entry of a request served here, with its text (built when written)."""
        entry = partial(transcript_entry, event, transcript, self._max_text_chars)
        self._queue_nowait(_Item(entry), f"inference.{event.endpoint}", event.model)

    async def record_request(self, event: RequestCompleted) -> None:
        """The bus handler: one entry per finished inference request (unless already kept),
        returning, on a durable bus, once it is committed (so the bus acknowledges only a
        written entry)."""
        if event.audited:
            return
        if not self._wait_for_commit:
            self.record_nowait(inference_entry(event))
            return
        committed = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(inference_entry(event), committed))  # waits for room
        self._waiting.set()
        await committed

    def _queue_nowait(self, item: _Item, action: str, target: str) -> bool:
        if self._queue.full():
            self.dropped += 1
            log.error("audit queue full: dropped %s on %s", action, target)
            return False
        self._queue.put_nowait(item)
        return True

    async def flush(self) -> None:
        """Write everything queued now; on a database error keep it for the next try."""
        while self._retry or not self._queue.empty():
            batch = self._retry or self._take(self._batch_size)
            self._retry = []
            try:
                await self._repo.append([entry for entry, _ in batch])
            except (SQLAlchemyError, OSError):
                log.exception("audit: writing %d entries failed; retrying", len(batch))
                self._retry = batch
                return
            self.written += len(batch)
            for _, item in batch:
                item.settle()

    def _take(self, limit: int) -> list[tuple[NewAuditEntry, _Item]]:
        batch: list[tuple[NewAuditEntry, _Item]] = []
        while len(batch) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            queued = item.entry
            batch.append((queued if isinstance(queued, NewAuditEntry) else queued(), item))
        return batch

    async def _write_forever(self) -> None:
        while True:
            await group_commit_wait(self._waiting, self._flush_seconds, self._commit_delay_seconds)
            await self.flush()
            if self._retry:
                await asyncio.sleep(self._flush_seconds)  # the database failed: not at once


def inference_entry(event: RequestCompleted) -> NewAuditEntry:
    """The audit entry of one finished inference request (metadata only)."""
    detail = {
        "event_id": event.id, "status": event.status, "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens, "latency_ms": event.latency_ms,
        "ttft_ms": event.ttft_ms, "stream": event.stream, "team_id": event.team_id,
        "cost_usd": event.cost_usd, "routed_to": event.routed_to,
        "failed_targets": list(event.failed_targets),
    }  # fmt: skip
    return NewAuditEntry(
        action=f"inference.{event.endpoint}",
        target=event.model,
        outcome=outcome_of(event.status),
        actor=event.key_id,
        detail=detail,
        at=event.occurred_at,
        id=event.id if len(event.id) <= _MAX_ID else None,
    )


def transcript_entry(
    event: RequestCompleted, transcript: Transcript, max_chars: int
) -> NewAuditEntry:
    """The inference entry of ``event`` with its prompt and completion text, personal data
    redacted (the guardrails' redactor) and each cut to ``max_chars``."""
    entry = inference_entry(event)
    prompt, prompt_cut = _redacted(transcript.prompt_text(), max_chars)
    completion, completion_cut = _redacted(transcript.completion_text(), max_chars)
    detail = {**entry.detail, "prompt": prompt, "completion": completion}
    if prompt_cut or completion_cut:
        detail["text_truncated"] = True
    return NewAuditEntry(
        action=entry.action, target=entry.target, outcome=entry.outcome, actor=entry.actor,
        detail=detail, at=entry.at, id=entry.id,
    )  # fmt: skip


def _redacted(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` redacted and cut to ``max_chars``; whether it was cut.

    Only the head is redacted (a long prompt costs no more than a short one), with the
    stream guard's margin, so a card number or address crossing the cut is still whole
    when the redactor sees it.
    """
    redacted = redact_pii(text[: max_chars + HOLD_BACK_CHARS])
    return redacted[:max_chars], len(redacted) > max_chars or len(
        text
    ) > max_chars + HOLD_BACK_CHARS


def outcome_of(status: int) -> str:
    """``success``, ``denied`` (401/403), ``rejected`` (other 4xx) or ``error`` (5xx)."""
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    return "rejected" if status < 500 else "error"
