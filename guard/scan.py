"""Running detectors over text: whole texts (input, log lines) and streamed text in releases.

A streamed answer is scanned in pieces, so two things keep a match from slipping through
the seam between pieces:

- look-back: each piece is scanned together with the end of the text released before it
  (as far back as each detector's `reach`), so a key split over two pieces is found whole and
  its second half is caught;
- hold-back (`settled_cut`): a piece is never cut inside a run of text that could still grow
  into a match (a word that may become an email address, digit groups that may become a card
  number), so such a value leaves in one piece, after it was seen whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from guard.detectors import Detector, Finding

# A run of characters that can sit inside one detected value: words, digits, emails, URLs,
# IP addresses, base64 keys; digit groups split by single spaces (card, phone and account
# numbers are printed that way); an IBAN's letter-and-digit groups.
_RUNS = (
    re.compile(r"[\w.%+\-@:/=~#]+"),
    re.compile(r"(?:[+(]*\d[\d().\-]*\ ?)+[+(]*"),
    re.compile(r"[A-Z]{2}\d\d(?:\ ?[A-Z0-9]{1,4})+\ ?"),
)
_PARTIAL_VALUE = re.compile(r"[\d@]")
# The most text held back from a release: longer than any PII value. Secrets can be longer,
# but are recognised from their first characters, and look-back carries that across a cut.
MAX_HOLD_BACK = 128


def placeholder(detector: str) -> str:
    return f"[redacted:{detector}]"


class Scanner:
    """A set of detectors run together; `reach` is the longest look-back any of them needs."""

    __slots__ = ("detectors", "reach")

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)
        self.reach = max((detector.reach for detector in self.detectors), default=0)

    def __bool__(self) -> bool:
        return bool(self.detectors)

    def findings(self, text: str, since: int = 0) -> list[Finding]:
        """Matches that reach into `text[since:]`, looking back at most each detector's reach;
        sorted by start."""
        found: list[Finding] = []
        for detector in self.detectors:
            offset = max(0, since - detector.reach)
            window = text[offset:] if offset else text
            for start, end in detector.find(window):
                if offset + end > since and end > start:
                    found.append(Finding(offset + start, offset + end, detector.name,
                                         detector.category))
        found.sort(key=lambda finding: (finding.start, -finding.end))
        return found

    def redact(self, text: str) -> str:
        """`text` with every match replaced by a placeholder naming its detector."""
        return redact(text, self.findings(text))


def redact(text: str, findings: Sequence[Finding], since: int = 0,
           continued: str | None = None) -> str:
    """`text[since:]` with the findings (sorted by start) replaced by placeholders; findings
    that overlap share the first one's placeholder. A finding that began before `since` is
    replaced by `continued` when given (its start was already redacted), else by its
    placeholder."""
    parts: list[str] = []
    position = since
    replaced = False  # `position` is the end of a placeholder's span
    for finding in findings:
        if finding.end <= position:
            continue
        if replaced and finding.start < position:  # overlaps the span just replaced
            position = finding.end
            continue
        replaced = True
        start = max(finding.start, position)
        parts.append(text[position:start])
        began_before = finding.start < since
        parts.append(continued if began_before and continued is not None
                     else placeholder(finding.detector))
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)


def settled_cut(text: str, cut: int) -> int:
    """The largest cut <= `cut` that does not split a run which could be part of one detected
    value. At the end of `text` the next characters are unknown, so a run touching the end
    counts as split. At most `MAX_HOLD_BACK` characters are kept back: a longer run (a URL, a
    list of numbers) is cut that far before its end, so whatever value ends it is still whole
    in what is kept."""
    end = len(text)
    floor = max(0, cut - MAX_HOLD_BACK)
    settled = cut
    moved = True
    while moved and settled > floor:
        moved = False
        for run in _RUNS:
            for match in run.finditer(text, max(0, settled - MAX_HOLD_BACK),
                                      min(end, cut + 1) if cut < end else end):
                start, stop = match.span()
                if start >= settled:
                    break
                if stop > settled or stop == end:
                    settled, moved = max(start, floor), True
                    break
    return settled


def cut_off_end(text: str) -> int:
    """How much of `text` may be released when nothing will follow (the answer broke off):
    all of it, unless its last run holds a digit or an @ and so may be the first half of a
    number or an address, which no detector can recognise and nobody should see."""
    cut = settled_cut(text, len(text))
    return cut if _PARTIAL_VALUE.search(text, cut) else len(text)
