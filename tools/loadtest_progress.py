"""What a load test shows while it runs: a bar redrawn in place on a terminal, a plain line
every few seconds otherwise (CI logs, files). Written to stderr, so stdout is the table alone."""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import TextIO

from tools.loadtest_record import RequestRecord
from tools.loadtest_run import LevelResult, Load

BAR = 24
LINE_EVERY_S = 5.0
RECENT = 200  # requests the live TTFT median is taken over


class LiveProgress:
    def __init__(self, out: TextIO, terminal: bool) -> None:
        self._out = out
        self._terminal = terminal
        self._load: Load | None = None
        self._total = 0
        self._closed = 0
        self._failed = 0
        self._ttfts: deque[float] = deque(maxlen=RECENT)
        self._started = 0.0
        self._last_line = 0.0

    def level_started(self, load: Load, total: int) -> None:
        self._load, self._total = load, total
        self._closed = self._failed = 0
        self._ttfts.clear()
        self._started = self._last_line = time.monotonic()
        self._out.write(f"loadtest: {load}, up to {total} requests\n")
        self._out.flush()

    def request_closed(self, record: RequestRecord) -> None:
        self._closed += 1
        if not record.ok:
            self._failed += 1
        elif (ttft := record.ttft) is not None:
            self._ttfts.append(ttft)

    def tick(self) -> None:
        now = time.monotonic()
        if self._terminal:
            done = self._closed / self._total if self._total else 0.0
            filled = int(done * BAR)
            self._out.write(f"\r[{'#' * filled}{'.' * (BAR - filled)}] {self._status(now)}  ")
            self._out.flush()
        elif now - self._last_line >= LINE_EVERY_S:
            self._last_line = now
            self._out.write(f"loadtest: {self._status(now)}\n")
            self._out.flush()

    def _status(self, now: float) -> str:
        ttft = (f"TTFT p50 {statistics.median(self._ttfts) * 1000:.0f} ms"
                if self._ttfts else "TTFT -")
        return (f"{self._closed}/{self._total} done, {self._failed} failed, {ttft}, "
                f"{now - self._started:.0f} s")

    def level_ended(self, result: LevelResult) -> None:
        if self._terminal:
            self._out.write("\n")
        self._out.write(f"loadtest: {result.load} finished: {self._status(time.monotonic())}\n")
        self._out.flush()


class NoProgress:
    """For callers printing their own results (the benchmarks)."""

    def level_started(self, load: Load, total: int) -> None: ...

    def request_closed(self, record: RequestRecord) -> None: ...

    def tick(self) -> None: ...

    def level_ended(self, result: LevelResult) -> None: ...
