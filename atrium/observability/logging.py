"""Log lines that name their trace: a filter, a JSON formatter, and the setup at start.

:class:`TraceContextFilter` stamps every record with the current ``trace_id``,
``span_id`` and request id (empty outside a request), so both formats carry them.
:class:`JsonFormatter` writes one JSON object a line. Secrets never reach a line:
``Bearer`` tokens and anything that looks like an Atrium API key are masked.

Under ``atrium serve`` the per-request lines are kept in memory and written in
batches (:class:`BufferedLineHandler`).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from atrium.gateway.middleware import current_request_id, current_trace_id
from atrium.observability.config import LoggingSettings
from atrium.observability.propagation import current_ids

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s]: %(message)s"
_SECRET = re.compile(
    r"(?i)(bearer\s+)[^\s\"',]+"
    r"|\b(atr-|sk-)[A-Za-z0-9_\-]{8,}"
    r"|((?:password|secret|api_key|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, API keys and ``password=...``-style values masked."""
    return _SECRET.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    keep = match.group(1) or match.group(2) or match.group(3) or ""
    return f"{keep}[redacted]"


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` and ``request_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record (always kept)."""
        ids = current_ids()
        # Tracing off: the request's own trace id (the one its x-atrium-trace-id names).
        record.trace_id, record.span_id = (
            ids if ids is not None else (current_trace_id.get() or "", "")
        )
        record.request_id = current_request_id.get() or ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp, level, logger, message, trace, span, request id."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON (secrets masked)."""
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for field in ("trace_id", "span_id", "request_id"):
            value = getattr(record, field, "")
            if value:
                line[field] = value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line).decode()


class RedactingFormatter(logging.Formatter):
    """The text format, with secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a text line (secrets masked)."""
        return redact(super().format(record))


class RequestLineFormatter(logging.Formatter):
    """The gateway's per-request JSON lines, with the trace and span ids added."""

    def format(self, record: logging.LogRecord) -> str:
        """The request line, its JSON object extended with the ids when in a trace."""
        message = record.getMessage()
        trace_id = getattr(record, "trace_id", "")
        if not trace_id or not message.endswith("}"):
            return message
        span_id = getattr(record, "span_id", "")
        if not span_id:
            return f'{message[:-1]},"trace_id":"{trace_id}"}}'
        return f'{message[:-1]},"trace_id":"{trace_id}","span_id":"{span_id}"}}'


def formatter_for(settings: LoggingSettings) -> logging.Formatter:
    """The formatter ``logging.format`` names."""
    return JsonFormatter() if settings.format == "json" else RedactingFormatter(TEXT_FORMAT)


class BufferedLineHandler(logging.StreamHandler[TextIO]):
    """Keeps formatted lines in memory and writes them together, so a line costs no syscall.

    The buffer is written when it holds ``max_bytes``, at every ``interval`` seconds
    (a daemon thread), on :meth:`flush` and at exit (``logging.shutdown``). A hand-off
    of every record to a writer thread (``QueueHandler``) was measured to cost more:
    about 17 more futex calls per request, for the same one write per line.
    """

    def __init__(
        self, stream: TextIO, *, interval: float = 0.2, max_bytes: int = 64 * 1024
    ) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._size = 0
        self._max_bytes = max_bytes
        self._interval = interval
        self._closed = threading.Event()
        threading.Thread(
            target=self._flush_every_interval, name="atrium-log-flush", daemon=True
        ).start()

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and keep the line (written when the buffer is due)."""
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._max_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the kept lines at once, then flush the stream."""
        self.acquire()
        try:
            if self._lines:
                self.stream.write("".join(self._lines))
                self._lines.clear()
                self._size = 0
        finally:
            self.release()
        super().flush()

    def close(self) -> None:
        """Write what is kept and stop the timer thread."""
        self._closed.set()
        self.flush()
        super().close()

    def _flush_every_interval(self) -> None:
        while not self._closed.wait(self._interval):
            self.flush()


_request_lines: list[BufferedLineHandler] = []


def stop_logging() -> None:
    """Write every kept request line and stop their timer threads (at exit; in tests)."""
    while _request_lines:
        _request_lines.pop().close()


def _cheap_records() -> None:
    # What our formats never show, so LogRecord need not look it up per record
    # (the logging HOWTO's "Optimization" table): caller frame, thread, process.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def configure_logging(settings: LoggingSettings, *, level: str, request_log: bool) -> None:
    """Atrium's lines on stderr in the chosen format; request lines as JSON on stdout.

    Called once by ``atrium serve`` before the server starts. Request lines are
    written in batches (:class:`BufferedLineHandler`), so serving a request writes none.
    """
    stop_logging()
    _cheap_records()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(settings))
    handler.addFilter(TraceContextFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # httpx logs every upstream call at INFO: one line per request on the hot path.
    numeric = logging.getLevelName(level.upper())
    logging.getLogger("httpx").setLevel(max(logging.WARNING, numeric))
    requests_log = logging.getLogger("atrium.requests")
    requests_log.propagate = False
    for old in list(requests_log.handlers):
        requests_log.removeHandler(old)
    if not request_log:
        requests_log.setLevel(logging.CRITICAL)
        return
    lines = BufferedLineHandler(sys.stdout)
    lines.setFormatter(RequestLineFormatter())
    lines.addFilter(TraceContextFilter())
    _request_lines.append(lines)
    requests_log.addHandler(lines)
    requests_log.setLevel(logging.INFO)
