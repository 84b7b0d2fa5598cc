"""A detector from outside the built-ins, loaded by configuration the way a Presidio adapter
would be: `GUARD_DETECTORS=email,tests.guard.plugin_detector:ProjectCodename`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from guard.detectors import Category


class ProjectCodename:
    name = "codename"
    category: Category = "pii"
    reach = 32

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        for match in re.finditer(r"\bBLUEBIRD-\d+\b", text):
            yield match.span()


NOT_A_DETECTOR = object()


class SlowEngine:
    """A heavy engine's cost: a model that takes its time over every text it judges."""

    name = "slow_engine"
    category: Category = "pii"
    reach = 32
    seconds_per_text = 1.2  # well above what a busy test machine adds to a request

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if "JUDGE-SLOWLY" in text:
            time.sleep(self.seconds_per_text)
        return iter(())
