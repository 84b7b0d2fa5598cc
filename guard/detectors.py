"""What a detector is, and the regular-expression kind every built-in one is made of.

A detector finds spans of text that must not pass (an email address, a card number, an API
key). It is pure and synchronous, so the streaming output stage can call it between tokens
and the input guard and the log scrubber can share it. A heavier engine (Presidio, a
classifier) plugs in by implementing the same three attributes and `find`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

Category = Literal["pii", "secret", "blocked"]
CATEGORIES: tuple[Category, ...] = ("pii", "secret", "blocked")


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    detector: str
    category: Category


class Detector(Protocol):
    """Finds what must not pass.

    `reach` is the longest text one match can span, in characters: a streaming scan looks that
    far back into text it already released, so a match split across two releases is still
    found whole.
    """

    @property
    def name(self) -> str: ...

    @property
    def category(self) -> Category: ...

    @property
    def reach(self) -> int: ...

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        """(start, end) of every match in `text`, in order."""
        ...


Hints = tuple[str, ...] | re.Pattern[str]


def hint_pattern(detector: Detector) -> re.Pattern[str] | None:
    """One pattern for the `hints` a detector declares (optional for plugged-in ones: they
    may have none); None when it has none, and so may match anywhere."""
    hints: Hints = getattr(detector, "hints", ())
    if isinstance(hints, re.Pattern):
        return hints
    return re.compile("|".join(map(re.escape, hints))) if hints else None


def may_occur(text: str, hints: Hints) -> bool:
    """Whether any of `hints` (substrings every match contains, or a pattern every match
    contains a match of) is in `text`; no hints: yes.

    A substring test runs at memory speed, a regular expression with look-behinds or
    alternatives at its start visits every position: on prose, which has no `@` and no key
    prefix, this skips most detectors for almost nothing.
    """
    if isinstance(hints, re.Pattern):
        return hints.search(text) is not None
    return not hints or any(hint in text for hint in hints)


class PatternDetector:
    """Matches of one regular expression, optionally confirmed by a check of the matched text
    (a Luhn digit, an IBAN checksum) so that look-alike numbers pass."""

    __slots__ = ("_pattern", "_validate", "category", "hints", "name", "reach")

    def __init__(self, name: str, category: Category, pattern: str | re.Pattern[str], *,
                 reach: int = 128, validate: Callable[[str], bool] | None = None,
                 hints: Hints = ()) -> None:
        self.name = name
        self.category: Category = category
        self.reach = reach
        self._pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        self._validate = validate
        self.hints = hints

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if not may_occur(text, self.hints):
            return
        validate = self._validate
        for match in self._pattern.finditer(text):
            if validate is None or validate(match.group()):
                yield match.span()

    def __repr__(self) -> str:
        return f"PatternDetector({self.name!r}, {self.category!r})"
