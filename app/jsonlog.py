"""JSON log lines on stdout, written off the event loop.

Every record becomes one orjson object with `ts`, `level`, `logger`, `event` (the message),
the `request_id` and `trace_id` of the task that logged it, and the record's `extra` fields.
Records are handed to a queue and written by a listener thread, so a slow log pipe never
stalls the event loop. `flush_logs` writes out what is queued; it runs at exit, at the end of
the app's lifespan, and before the process dies of the SIGTERM uvicorn re-raises after a
graceful shutdown (which skips exit handlers).
"""

from __future__ import annotations

import atexit
import logging
import queue
import signal
import sys
import threading
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from types import FrameType
from typing import IO, Any

import orjson

from app import context

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "request_id", "trace_id", "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "sse_starlette")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
            line["trace_id"] = getattr(record, "trace_id", None)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS:
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def _stamp_context(factory: Any) -> Any:
    """Wrap the record factory so every record carries its request's ids, from any logger."""

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        ctx = context.current.get()
        if ctx is not None:
            record.request_id = ctx.request_id
            record.trace_id = ctx.trace_id
        return record

    make_record.stamps_context = True  # type: ignore[attr-defined]
    return make_record


class _LineQueueHandler(QueueHandler):
    """Keeps the record's fields; renders only the traceback, which needs this thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        record.msg, record.args = record.getMessage(), None
        return record


_listener: QueueListener | None = None


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger (ours, uvicorn's) to JSON lines; safe to call more than once."""
    global _listener
    if not getattr(logging.getLogRecordFactory(), "stamps_context", False):
        logging.setLogRecordFactory(_stamp_context(logging.getLogRecordFactory()))
    if _listener is not None:
        _listener.stop()
    output = logging.StreamHandler(stream or sys.stdout)
    output.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = QueueListener(records, output)
    _listener.start()
    root = logging.getLogger()
    root.handlers = [_LineQueueHandler(records)]
    root.setLevel(level)
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers = []
        server_logger.propagate = True
    # Our edge writes the access line itself, with the request id and timing.
    logging.getLogger("uvicorn.access").disabled = True
    # sse-starlette logs every chunk at DEBUG: that would put model output in the logs.
    logging.getLogger("sse_starlette").setLevel(max(logging.INFO, logging.getLevelName(level)))
    _flush_before_termination()


def flush_logs() -> None:
    """Write out every queued line (the listener drains its queue before it stops)."""
    if _listener is not None:
        _listener.stop()
        _listener.start()


def _flush_before_termination() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def flush_then_terminate(signum: int, frame: FrameType | None) -> None:
        flush_logs()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, flush_then_terminate)


atexit.register(flush_logs)
