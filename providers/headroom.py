"""A route's quota as its vendor last reported it, for the gauges and for moving traffic to
the next route before the vendor starts answering 429 (`HEADROOM_FALLBACK_AT`)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import Gauge

from providers.rate_limits import Kind, Window, read_rate_limits
from telemetry.metrics import QUOTA_LIMIT, QUOTA_REMAINING, QUOTA_RESET


class Headroom:
    """The last window of each kind one route's vendor reported, here or (with Redis) on
    another replica: the most recently seen wins."""

    def __init__(self, route: str) -> None:
        self.route = route
        self._windows: dict[Kind, Window] = {}
        self._gauges: dict[Kind, tuple[Gauge, Gauge, Gauge]] = {}  # labelled once, not per set

    def observe(self, headers: Mapping[str, str]) -> None:
        """Reads a vendor response's headers (of an answer or a refusal). Never raises: what
        the vendor wrote there cannot fail its answer."""
        try:
            windows = read_rate_limits(headers, time.time())
        except Exception:  # a case the parser does not foresee: ignored, as malformed ones are
            return
        self.merge(windows)

    def merge(self, windows: Mapping[Kind, Window]) -> None:
        """Takes the windows newer than those known."""
        for kind, window in windows.items():
            known = self._windows.get(kind)
            if known is None or window.seen_at > known.seen_at:
                self._windows[kind] = window
                limit, remaining, reset = self._gauges_of(kind)
                limit.set(window.limit)
                remaining.set(window.remaining)
                if window.resets_at is not None:
                    reset.set(window.resets_at)

    def _gauges_of(self, kind: Kind) -> tuple[Gauge, Gauge, Gauge]:
        gauges = self._gauges.get(kind)
        if gauges is None:
            gauges = self._gauges[kind] = (QUOTA_LIMIT.labels(self.route, kind),
                                           QUOTA_REMAINING.labels(self.route, kind),
                                           QUOTA_RESET.labels(self.route, kind))
        return gauges

    def windows(self) -> dict[Kind, Window]:
        return dict(self._windows)

    def short(self, used_at: float, now: float) -> Kind | None:
        """The kind whose share used has reached `used_at` in a window that has not reset
        yet, if any. A window with no reset time is never short: nothing would say when the
        route is worth asking again."""
        for kind, window in self._windows.items():
            if (window.resets_at is not None and window.resets_at > now
                    and window.used() >= used_at):
                return kind
        return None
