"""The ``backend`` span of one upstream attempt (a replica's call or stream).

Each helper first asks :func:`recording_tracer`: with tracing off, or the request not
sampled, it hands back the work untouched, so the hot path builds no span, no wrapper
and no attribute dict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractContextManager
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from atrium.core.errors import AtriumError, UpstreamStatusError, status_of
from atrium.observability.propagation import recording_tracer
from atrium.runtime.base import StreamEvent

T = TypeVar("T")
BACKEND_SPAN = "backend"


def attempt(model: str, replica: str, work: Awaitable[T]) -> Awaitable[T]:
    """``work`` (one call to ``replica`` of ``model``) inside a ``backend`` span when traced."""
    tracer = recording_tracer()
    return work if tracer is None else _traced(tracer, model, replica, work)


def attempt_stream(
    model: str, replica: str, events: AsyncIterator[StreamEvent]
) -> AsyncIterator[StreamEvent]:
    """``events`` (one stream from ``replica``) inside a ``backend`` span when traced.

    The span is current while the first event is awaited (when the upstream request is
    sent, so its ``traceparent`` names this span) and ends with the stream.
    """
    tracer = recording_tracer()
    return events if tracer is None else _traced_events(tracer, model, replica, events)


def _start(tracer: Tracer, model: str, replica: str) -> Span:
    attributes = {"gen_ai.request.model": model, "atrium.replica": replica}
    return tracer.start_span(BACKEND_SPAN, kind=SpanKind.CLIENT, attributes=attributes)


def _current(span: Span) -> AbstractContextManager[Span]:
    return trace.use_span(span, record_exception=False, set_status_on_exception=True)


async def _traced(tracer: Tracer, model: str, replica: str, work: Awaitable[T]) -> T:
    span = _start(tracer, model, replica)
    try:
        with _current(span):
            result = await work
        span.set_attribute("atrium.status", 200)
        return result
    except AtriumError as exc:
        failed(span, exc)
        raise
    finally:
        span.end()


async def _traced_events(
    tracer: Tracer, model: str, replica: str, events: AsyncIterator[StreamEvent]
) -> AsyncIterator[StreamEvent]:
    span = _start(tracer, model, replica)
    try:
        with _current(span):
            event = await anext(events, None)
        while event is not None:
            yield event
            event = await anext(events, None)
        span.set_attribute("atrium.status", 200)
    except AtriumError as exc:
        failed(span, exc)
        raise
    finally:
        span.end()
        await events.aclose()  # type: ignore[attr-defined]


def failed(span: Span, error: AtriumError) -> None:
    """Name ``error`` on ``span``: its status, code and the upstream's status if any."""
    status = status_of(error)
    span.set_attribute("atrium.status", status)
    span.set_attribute("error.type", error.code or type(error).__name__)
    if isinstance(error, UpstreamStatusError):
        span.set_attribute("http.response.status_code", error.upstream_status)
    span.set_status(Status(StatusCode.ERROR, error.message))
