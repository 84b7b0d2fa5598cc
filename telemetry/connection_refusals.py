"""The connections the protocol (app.connections) turns away: each counted in
`hello_ship_connections_refused_total{reason}`, and summed up in one `connections_refused`
line at most every `REFUSALS_LOG_EVERY_S`, so a flood of bad connections is not a flood of log
lines.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter

from telemetry.metrics import CONNECTIONS_REFUSED

logger = logging.getLogger("hello_ship.edge")

REFUSALS_LOG_EVERY_S = 10.0


class RefusalLog:
    """One line every few seconds with what was refused since the last: a flood of bad
    connections must not become a flood of log lines, nor its tail go unsaid."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._last = -REFUSALS_LOG_EVERY_S
        self._flush_due: asyncio.TimerHandle | None = None

    def add(self, reason: str) -> None:
        CONNECTIONS_REFUSED.labels(reason).inc()
        self._counts[reason] += 1
        wait = self._last + REFUSALS_LOG_EVERY_S - time.monotonic()
        if wait <= 0:
            self._flush()
        elif self._flush_due is None:
            self._flush_due = asyncio.get_running_loop().call_later(wait, self._flush)

    def _flush(self) -> None:
        self._flush_due = None
        if self._counts:
            logger.info("connections_refused", extra={"reasons": dict(self._counts)})
            self._counts.clear()
            self._last = time.monotonic()


@functools.cache
def count_malformed_requests(refusals: RefusalLog) -> None:
    """uvicorn warns of every malformed request and upgrade attempt, which scanners send all
    day: counted as refusals instead, once per process."""
    noise = {"Invalid HTTP request received.": "bad_request",
             "Unsupported upgrade request.": "upgrade"}

    def count(record: logging.LogRecord) -> bool:
        reason = noise.get(record.msg) if isinstance(record.msg, str) else None
        if reason is not None:
            refusals.add(reason)
            return False
        return not (isinstance(record.msg, str)
                    and record.msg.startswith("No supported WebSocket library detected."))

    logging.getLogger("uvicorn.error").addFilter(count)
