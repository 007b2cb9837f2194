"""The trace context of the current request: read, passed on, named in logs.

Only the OpenTelemetry API is used here (no SDK), so the hot-path modules that
import this one (backends, the logging filter) stay light. With tracing off no
span is ever current and every function returns at its first check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context, attach, create_key, detach, get_value, set_value
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The request's tracer rides in its OpenTelemetry context (the provider is never global,
# so two platforms in one process keep apart): inner layers find it there.
_TRACER = create_key("atrium-tracer")
_HEX = frozenset("0123456789abcdef")


def extract(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The caller's context from W3C headers, or None when it sent none (or a bad one)."""
    if not traceparent:
        return None
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    context = TraceContextTextMapPropagator().extract(carrier)
    valid = trace.get_current_span(context).get_span_context().is_valid
    return context if valid else None


def current_ids() -> tuple[str, str] | None:
    """The current trace and span ids in hex, or None outside any span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` (to link to it later), or None outside one."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT)


def with_traceparent(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` plus the current span's ``traceparent`` (and ``tracestate``), if any.

    The input is returned as it is outside a span, so callers can pass a shared dict.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return headers
    carried = dict(headers)
    TraceContextTextMapPropagator().inject(carried)
    return carried


def traceparent_headers() -> dict[str, str] | None:
    """The current span's ``traceparent`` (and ``tracestate``) as headers, or None outside one.

    For SDKs that take extra headers per request (None: send none).
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


@contextmanager
def carrying(tracer: trace.Tracer) -> Iterator[None]:
    """The current context carries ``tracer`` inside the block, for inner layers' spans."""
    token = attach(set_value(_TRACER, tracer))
    try:
        yield
    finally:
        detach(token)


def recording_tracer() -> trace.Tracer | None:
    """The request's tracer while its current span is recorded, else None (open no span).

    With tracing off this is one context lookup, so hot paths call it unconditionally.
    """
    tracer = get_value(_TRACER)
    if tracer is None or not trace.get_current_span().is_recording():
        return None
    assert isinstance(tracer, trace.Tracer)
    return tracer


def trace_id_of(traceparent: str) -> str | None:
    """The trace id of a W3C ``traceparent`` (version 00 layout), or None when malformed."""
    parts = traceparent.strip().lower().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    trace_id = parts[1]
    if len(trace_id) != 32 or not _HEX.issuperset(trace_id) or trace_id == "0" * 32:
        return None
    return trace_id
