"""A detector from outside the built-ins, loaded by configuration the way a Presidio adapter
would be: `GUARD_DETECTORS=email,tests.guard.plugin_detector:ProjectCodename`."""

from __future__ import annotations

import re
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
