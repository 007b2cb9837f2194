"""Log lines name their trace and request, in JSON or text, and never carry secrets."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atrium.gateway.middleware import current_request_id
from atrium.observability.config import LoggingSettings, TracingSettings
from atrium.observability.logging import (
    RequestLineFormatter,
    TraceContextFilter,
    configure_logging,
    formatter_for,
    redact,
    stop_logging,
)
from atrium.observability.tracing import Tracing


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    traced = Tracing(TracingSettings(enabled=True), exporter=InMemorySpanExporter())
    yield traced
    traced.shutdown()


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(TraceContextFilter())
    logger = logging.getLogger(f"atrium.test.{id(out)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_json_lines_carry_the_trace_span_and_request_ids(tracing: Tracing) -> None:
    logger, out = _logger(formatter_for(LoggingSettings(format="json")))
    token = current_request_id.set("req-42")
    try:
        with tracing.span("work") as span:
            logger.info("answered %s", "model-a")
            context = span.get_span_context()
    finally:
        current_request_id.reset(token)
    line = orjson.loads(out.getvalue().splitlines()[0])
    assert line["message"] == "answered model-a"
    assert line["level"] == "INFO"
    assert line["logger"].startswith("atrium.test.")
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["request_id"] == "req-42"
    assert line["timestamp"].endswith("+00:00")


def test_outside_a_trace_json_lines_have_no_ids() -> None:
    logger, out = _logger(formatter_for(LoggingSettings(format="json")))
    logger.warning("idle")
    line = orjson.loads(out.getvalue())
    assert "trace_id" not in line
    assert "request_id" not in line
    assert line["level"] == "WARNING"


def test_text_lines_name_the_trace(tracing: Tracing) -> None:
    logger, out = _logger(formatter_for(LoggingSettings(format="text")))
    with tracing.span("work") as span:
        logger.info("hello")
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert f"[trace={trace_id}]: hello" in out.getvalue()


def test_exceptions_are_logged_as_json(tracing: Tracing) -> None:
    logger, out = _logger(formatter_for(LoggingSettings(format="json")))
    try:
        _fail("with password=hunter2 inside")
    except ValueError:
        logger.exception("failed")
    line = orjson.loads(out.getvalue())
    assert "ValueError" in line["exception"]
    assert "hunter2" not in line["exception"]


def _fail(message: str) -> None:
    raise ValueError(message)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("calling with Authorization: Bearer atr-abcdefghijklmnop", "abcdefghijklmnop"),
        ("key atr-0123456789abcdef0123 was refused", "0123456789abcdef0123"),
        ("upstream sk-proj_ABCDEFGHIJKL failed", "ABCDEFGHIJKL"),
        ('{"password": "s3cr3t-value"}', "s3cr3t-value"),
        ("api_key=xyz123456", "xyz123456"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "[redacted]" in masked


def test_ordinary_text_is_left_alone() -> None:
    text = '{"prompt_tokens": 12, "completion_tokens": 3, "model": "atr"}'
    assert redact(text) == text


def test_request_lines_gain_the_trace_ids(tracing: Tracing) -> None:
    logger, out = _logger(RequestLineFormatter())
    with tracing.span("request") as span:
        logger.info("%s", '{"event":"request","status":200}')
        trace_id = format(span.get_span_context().trace_id, "032x")
    logger.info("%s", '{"event":"request","status":404}')
    traced, untraced = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert traced == {
        "event": "request",
        "status": 200,
        "trace_id": trace_id,
        "span_id": traced["span_id"],
    }
    assert len(traced["span_id"]) == 16
    assert untraced == {"event": "request", "status": 404}


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root, requests_log = logging.getLogger(), logging.getLogger("atrium.requests")
    saved = (root.handlers[:], root.level, requests_log.handlers[:], requests_log.level)
    flags = (logging._srcfile, logging.logThreads, logging.logProcesses)
    yield
    stop_logging()
    root.handlers[:], requests_log.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    requests_log.setLevel(saved[3])
    requests_log.propagate = True
    logging._srcfile, logging.logThreads, logging.logProcesses = flags


def test_request_lines_are_written_in_batches_with_their_ids(
    capsys: pytest.CaptureFixture[str], restored_logging: None, tracing: Tracing
) -> None:
    configure_logging(LoggingSettings(format="json"), level="info", request_log=True)
    requests_log = logging.getLogger("atrium.requests")
    with tracing.span("request") as span:
        for status in (200, 404):
            requests_log.info("%s", f'{{"event":"request","status":{status}}}')
        trace_id = format(span.get_span_context().trace_id, "032x")
    logging.getLogger("atrium.test.lines").warning("slow upstream")
    out, err = capsys.readouterr()
    assert out == ""  # kept, not yet written
    assert orjson.loads(err)["message"] == "slow upstream"  # other lines at once
    stop_logging()  # writes what is kept
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["status"] for line in lines] == [200, 404]
    assert {line["trace_id"] for line in lines} == {trace_id}


def test_kept_request_lines_are_written_within_the_interval(
    capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    configure_logging(LoggingSettings(), level="info", request_log=True)
    logging.getLogger("atrium.requests").info("%s", '{"event":"request"}')
    deadline = time.monotonic() + 10.0
    out = ""
    while not out and time.monotonic() < deadline:
        time.sleep(0.05)
        out += capsys.readouterr().out
    stop_logging()  # while capsys's stream is open
    assert orjson.loads(out) == {"event": "request"}
