"""JSON log lines on stdout, written off the event loop.

Every record becomes one orjson object with `ts`, `level`, `logger`, `event` (the message),
`pid`, `log_schema`, the `request_id` and `trace_id` of the task that logged it, and the
record's `extra` fields. The "Log schema" of docs/observability.md documents every event and
field of version `LOG_SCHEMA`: within a version fields are only added; a rename, a removal or a
change of a field's type or meaning bumps it.

Exceptions are logged as their types and stack frames only: exception messages are where
vendors and libraries put request bodies, prompts and keys. As a last line of defence,
every other text field is scrubbed with the built-in PII and secret detectors, so a value
that slipped into a message (a key in a library's warning) is written as a placeholder.

Records are handed to a queue and written by a listener thread, so a slow log pipe never stalls
the event loop. At the end of the app's lifespan the queue is drained and lines are written
directly from then on, so the server's last lines survive the SIGTERM uvicorn re-raises after
a graceful shutdown (which skips exit handlers).
"""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import sys
import traceback
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from types import TracebackType
from typing import IO, Any

import orjson

from guard.builtin import BUILTIN
from guard.scan import Scanner
from telemetry import trace_context

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "request_id", "trace_id", "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "sse_starlette")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def describe_exception(error: BaseException) -> str:
    """The exception chain as types and stack frames, without any exception message."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        kind = type(current)
        parts.append(f"Traceback (most recent call last):\n{frames}"
                     f"{kind.__module__}.{kind.__qualname__}")
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__)
    return "\n\nwhich was raised while handling:\n".join(reversed(parts))


# The version of the log schema every line is written in (see the module docstring).
LOG_SCHEMA = 1

# Fields the service itself fills with times, names, digests and addresses it checked to be
# IP addresses: nothing to scrub there. (`request_id` is scrubbed: a client may send its own.)
_OWN_FIELDS = frozenset({"ts", "level", "logger", "pid", "log_schema", "trace_id",
                         "input_hash", "client_ip"})
_LOG_SCRUBBER = Scanner(list(BUILTIN.values()))


def _scrub(value: Any) -> Any:
    """Text anywhere in a field's value, scrubbed; numbers and flags as they are."""
    if isinstance(value, str):
        return scrubbed(value) if len(value) > 5 else value
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {_scrub(str(key)): _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item) for item in value]
    return scrubbed(str(value))  # what orjson would otherwise render with str()


@functools.lru_cache(maxsize=4096)
def scrubbed(value: str) -> str:
    """The value with anything the built-in detectors find redacted. Most values repeat
    line after line (events, routes, tenants, features): each is scanned once."""
    return _LOG_SCRUBBER.redact(value)


class JsonFormatter(logging.Formatter):
    def __init__(self, scrub: bool = True) -> None:
        super().__init__()
        self._scrub_lines = scrub

    def formatException(self, ei: Any) -> str:
        return describe_exception(ei[1]) if ei[1] is not None else ""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "pid": record.process,
            "log_schema": LOG_SCHEMA,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
            line["trace_id"] = getattr(record, "trace_id", None)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS:
                line[key] = value
        if record.exc_info:
            # Not the cached `exc_text`: another handler may have rendered it with messages.
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # rendered safely by the queue handler
            line["exception"] = record.exc_text
        if self._scrub_lines:
            for key, value in line.items():
                if key not in _OWN_FIELDS:
                    line[key] = _scrub(value)
        return orjson.dumps(line, default=str).decode()


def stamp_request_context() -> None:
    """Make every record carry its request's ids, from any logger; idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "stamps_context", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        ctx = trace_context.current.get()
        if ctx is not None:
            record.request_id = ctx.request_id
            record.trace_id = ctx.trace_id
        return record

    make_record.stamps_context = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


class _LineQueueHandler(QueueHandler):
    """Keeps the record's fields; renders only the traceback, which needs this thread."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord]) -> None:
        super().__init__(records)
        # Set under the handler's lock once the writer thread stops: a thread that picked
        # this handler before the switch must not queue a line nobody will read.
        self.direct: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.direct is not None:
            self.direct.handle(record)
        else:
            super().emit(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            if record.exc_info[1] is not None:
                record.exc_text = describe_exception(record.exc_info[1])
            record.exc_info = None
        record.msg, record.args = record.getMessage(), None
        return record


class _Output:
    """The process's one log output: a queue and its writer thread, until `finish`."""

    def __init__(self, stream: IO[str]) -> None:
        self.writer = logging.StreamHandler(stream)
        self.writer.setFormatter(JsonFormatter())
        self.records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.queue_handler = _LineQueueHandler(self.records)
        self.listener: QueueListener | None = QueueListener(self.records, self.writer)
        self.listener.start()

    def finish(self) -> None:
        """Write out what is queued and write every later line directly."""
        if self.listener is None:
            return
        with self.queue_handler.lock:  # type: ignore[union-attr]
            self.queue_handler.direct = self.writer
        root = logging.getLogger()
        root.handlers = [self.writer if h is self.queue_handler else h for h in root.handlers]
        self.listener.stop()  # writes the queue up to its stop marker
        while True:  # lines another thread queued after the marker
            try:
                self.writer.handle(self.records.get_nowait())
            except queue.Empty:
                break
        self.listener = None


_output: _Output | None = None
_VENDOR_LOGGERS = ("openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2",
                   "botocore", "aiobotocore", "aioboto3", "boto3", "urllib3", "aiohttp")


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger (ours, uvicorn's) to JSON lines; safe to call more than once."""
    global _output
    stamp_request_context()
    if _output is not None:
        _output.finish()
    _output = _Output(stream or sys.stdout)
    root = logging.getLogger()
    root.handlers = [_output.queue_handler]
    root.setLevel(level)
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers = []
        server_logger.propagate = True
    # Our edge writes the access line itself, with the request id and timing.
    logging.getLogger("uvicorn.access").disabled = True
    # sse-starlette logs every chunk at DEBUG: that would put model output in the logs.
    logging.getLogger("sse_starlette").setLevel(max(logging.INFO, logging.getLevelName(level)))
    # The vendor SDKs and their HTTP stacks log request bodies (user text) and headers at
    # DEBUG and every request at INFO; the service logs its own calls without either.
    for name in _VENDOR_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def flush_logs() -> None:
    """Write out every queued line, and every later one directly (the process is ending)."""
    if _output is not None:
        _output.finish()


atexit.register(flush_logs)
