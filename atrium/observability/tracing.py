"""OpenTelemetry tracing: the provider from settings and the request span.

:class:`Tracing` owns one ``TracerProvider`` (never installed globally, so two
platforms in one process keep apart). :class:`TracingMiddleware` is pure ASGI: it
continues the caller's W3C trace, opens the server span, names the trace in the
``x-atrium-trace-id`` response header and ends the span when the answer is sent.
:class:`TracedGatewayMetrics` adds the gateway's facts (model, served replica,
tokens, status) to that span where the metrics are recorded. With tracing off none
of these are built, so the hot path creates no span object at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.observability.config import TracingSettings
from atrium.observability.metrics import GatewayMetrics
from atrium.observability.propagation import carrying, extract
from atrium.runtime.routing import routed_to, served_by

TRACE_ID_HEADER = b"x-atrium-trace-id"
INSTRUMENTATION = "atrium"


class Tracing:
    """The tracer provider of one platform, from :class:`TracingSettings`.

    ``exporter`` replaces the OTLP exporter and is flushed span by span (tests use an
    in-memory one); otherwise spans go to ``otlp_endpoint`` in batches, or nowhere.
    """

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        self.settings = settings
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)),
            resource=Resource.create({"service.name": settings.service_name}),
        )
        processor = _processor(settings, exporter)
        if processor is not None:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(INSTRUMENTATION)

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporter."""
        self.provider.shutdown()

    @contextmanager
    def span(self, name: str, *, links: Sequence[str] = (), **attributes: Any) -> Iterator[Span]:
        """A child of the current span (for retrieval steps, workflow blocks, ...).

        With ``links`` (``traceparent`` strings) it is instead the root of a new trace,
        linked to each of those spans: a durable workflow run linked to the request that
        started it, which it may outlive or be resumed long after.
        """
        linked = [Link(c) for c in map(_span_context, links) if c is not None]
        with carrying(self.tracer), self.tracer.start_as_current_span(
            name, context=Context() if linked else None, links=linked,
            attributes=_clean(attributes),
        ) as span:  # fmt: skip
            yield span


def _span_context(traceparent: str) -> trace.SpanContext | None:
    context = extract(traceparent)
    return None if context is None else trace.get_current_span(context).get_span_context()


def _processor(settings: TracingSettings, exporter: SpanExporter | None) -> SpanProcessor | None:
    if exporter is not None:
        return SimpleSpanProcessor(exporter)
    if settings.otlp_endpoint:
        otlp = OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=settings.otlp_headers)
        return BatchSpanProcessor(otlp)
    return None


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}


class TracingMiddleware:
    """The server span of every HTTP request, continuing the caller's ``traceparent``."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracer = tracing.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = extract(*_trace_headers(scope))
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope["path"]}
        # The tracer rides in the context: the router and backend spans below find it there.
        with (
            carrying(self.tracer),
            self.tracer.start_as_current_span(
                method, context=parent, kind=SpanKind.SERVER, attributes=attributes
            ) as span,
        ):
            header = (TRACE_ID_HEADER, format(span.get_span_context().trace_id, "032x").encode())

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), header]
                    _set_status(span, int(message["status"]))
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                template = _route_template(scope)
                if template is not None:
                    span.set_attribute("http.route", template)
                    span.update_name(f"{method} {template}")


def _route_template(scope: Scope) -> str | None:
    """The matched route's template (never a raw path with ids in it: span names stay few)."""
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        return template
    # Plain Starlette routes (the inference endpoints) leave no "route" behind; a
    # matched endpoint without path parameters has its path as its template.
    if "endpoint" in scope and not scope.get("path_params"):
        path: str = scope["path"]
        return path
    return None


def _trace_headers(scope: Scope) -> tuple[str | None, str | None]:
    traceparent = tracestate = None
    for name, value in scope["headers"]:
        if name == b"traceparent":
            traceparent = value.decode("latin-1")
        elif name == b"tracestate":
            tracestate = value.decode("latin-1")
    return traceparent, tracestate


def _set_status(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


class TracedGatewayMetrics(GatewayMetrics):
    """Gateway metrics that also describe each request on the current span."""

    def observe(
        self,
        *,
        model: str,
        endpoint: str,
        status: int,
        seconds: float,
        prompt_tokens: int,
        completion_tokens: int,
        overhead_seconds: float | None = None,
    ) -> None:
        """Record one finished request, and name its model, replica and tokens on the span."""
        super().observe(
            model=model,
            endpoint=endpoint,
            status=status,
            seconds=seconds,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            overhead_seconds=overhead_seconds,
        )
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.set_attributes(
            _clean(
                {
                    "gen_ai.operation.name": endpoint,
                    "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": prompt_tokens,
                    "gen_ai.usage.output_tokens": completion_tokens,
                    "atrium.served_by": served_by.get(),
                    "atrium.routed_to": routed_to.get(),
                    "atrium.status": status,
                }
            )
        )
