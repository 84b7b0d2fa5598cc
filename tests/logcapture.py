"""Capturing the service's log records in-process, rendered exactly as they would be written."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from telemetry.jsonlog import JsonFormatter, stamp_request_context


class CapturedLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        parsed = [orjson.loads(line) for line in self.lines]
        return [r for r in parsed if event is None or r["event"] == event]


@contextmanager
def captured_logs() -> Iterator[CapturedLogs]:
    stamp_request_context()
    handler = CapturedLogs()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
