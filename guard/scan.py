"""Running detectors over text: whole texts (input, log lines) and streamed text in releases.

A streamed answer is scanned in pieces, so two things keep a match from slipping through
the seam between pieces:

- look-back: each piece is scanned together with the end of the text released before it
  (as far back as each detector's `reach`), so a key split over two pieces is found whole and
  its second half is caught;
- hold-back (`settled_cut`): a piece is never cut inside a run of text that could still grow
  into a match (a word that may become an email address, digit groups that may become a card
  number), so such a value leaves in one piece, after it was seen whole.

Both read the text without its invisible format characters (`guard.text`), so a zero-width
space neither hides a value from a detector nor ends a run; what they find is mapped back to
the text as written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from guard.builtin import SECRET_PREFIXES
from guard.detectors import Detector, Finding, hint_pattern
from guard.text import DASHES, LATIN_LETTERS, SPACES, strip_format, without_format

_SPACE, _DASH = re.escape(SPACES), re.escape(DASHES)
# A run of characters that can sit inside one detected value: ASCII and Latin words, digits,
# emails, URLs, IP addresses, base64 keys; digit groups split by single spaces or dashes of
# any kind (card, phone and account numbers are printed that way); an IBAN's letter-and-digit
# groups. No other script's letters: a Chinese or Japanese clause has no spaces, and taken for
# one run it would be held back whole.
_WORD_RUN = rf"[A-Za-z0-9_{LATIN_LETTERS}.%+\-@:/=~#]+"
_RUNS = (
    re.compile(_WORD_RUN),
    re.compile(rf"(?:[+(]*\d[\d().{_DASH}]*[{_SPACE}]?)+[+(]*"),
    re.compile(rf"[A-Z]{{2}}\d\d(?:[{_SPACE}]?[A-Z0-9]{{1,4}})+[{_SPACE}]?"),
)
_RUN_AT_END = re.compile(_WORD_RUN + r"\Z")
_DIGIT = re.compile(r"\d")
_PARTIAL_VALUE = re.compile(r"[\d@]")
# The beginning of a secret, at the start of a word (`KEY=sk-proj-…`, not `task-…`).
_SECRET_START = re.compile(
    "(?<![A-Za-z0-9])(?:" + "|".join(map(re.escape, SECRET_PREFIXES)) + ")")
# The most text held back from a release: longer than any PII value. Secrets can be longer,
# but are recognised from their first characters, and look-back carries that across a cut.
MAX_HOLD_BACK = 128


def placeholder(detector: str) -> str:
    return f"[redacted:{detector}]"


class Scanner:
    """A set of detectors run together; `reach` is the longest look-back any of them needs."""

    __slots__ = ("_hint_index", "detectors", "reach")

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)
        self.reach = max((detector.reach for detector in self.detectors), default=0)
        self._hint_index: HintIndex | None = None

    @property
    def hint_index(self) -> HintIndex:
        """Built on first use, once: most scanners (the input guard's, the log scrubber's)
        never stream."""
        if self._hint_index is None:
            self._hint_index = HintIndex.of(self.detectors)
        return self._hint_index

    def __bool__(self) -> bool:
        return bool(self.detectors)

    def findings(self, text: str, since: int = 0, *, stripped_upto: int = 0,
                 only: Sequence[Detector] | None = None) -> list[Finding]:
        """Matches that reach into `text[since:]`, looking back at most each detector's reach;
        sorted by start. Detectors see `text` without its format characters; a finding's span
        runs from the first to the last character of the value as written. A streaming caller
        that keeps its look-back context stripped of them says so with `stripped_upto` (the
        length of that context): only the text after it is searched for one. `only` runs
        just those of the detectors (those a `HintTrail` found due)."""
        detectors = self.detectors if only is None else only
        view = without_format(text, stripped_upto)
        if view is None:
            return self._findings(detectors, text, since)
        return [Finding(*view.original_span(finding.start, finding.end), finding.detector,
                        finding.category)
                for finding in self._findings(detectors, view.text, view.position(since))]

    @staticmethod
    def _findings(detectors: Sequence[Detector], text: str, since: int) -> list[Finding]:
        found: list[Finding] = []
        for detector in detectors:
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


@dataclass(frozen=True, slots=True)
class HintIndex:
    """What a `HintTrail` searches for, worked out once per scanner: each different hint
    pattern once, which one each detector has, the longest reach of the detectors with it,
    and how far back a hint split by a release can begin. `gate` matches any hint; None when
    some detector has no hints (it may match anywhere, so every release runs them all)."""

    gate: re.Pattern[str] | None
    hints: tuple[re.Pattern[str], ...]
    hint_of: tuple[int, ...]
    reach: tuple[int, ...]
    overlap: int

    @classmethod
    def of(cls, detectors: Sequence[Detector]) -> HintIndex:
        hints: list[re.Pattern[str]] = []
        hint_of: list[int] = []
        for detector in detectors:
            hint = hint_pattern(detector)
            if hint is None:
                return cls(None, (), (), (), 0)
            known = [index for index, seen in enumerate(hints)
                     if (seen.pattern, seen.flags) == (hint.pattern, hint.flags)]
            if not known:
                hints.append(hint)
            hint_of.append(known[0] if known else len(hints) - 1)
        gate = (re.compile("|".join(f"(?:{hint.pattern})" for hint in hints))
                if hints and all(hint.flags == re.UNICODE for hint in hints) else None)
        reach = tuple(max(detector.reach for detector, hint in zip(detectors, hint_of,
                                                                     strict=True)
                          if hint == index) for index in range(len(hints)))
        overlap = max((len(hint) for detector in detectors
                       if not isinstance(hint_set := getattr(detector, "hints", ()), re.Pattern)
                       for hint in hint_set), default=1) - 1
        return cls(gate, tuple(hints), tuple(hint_of), reach, overlap)


class HintTrail:
    """One stream's record of where each detector's hints (`Detector.hints`: what every match
    contains, an `@`, a digit, a key prefix) last occurred in the text released, so that a
    release runs only the detectors whose look-back or new text holds one. A detector whose
    window holds no hint finds nothing there, so the findings are the same as running all; on
    prose that is most releases, and a release streamed a word at a time costs a search of its
    new characters instead of every detector's look-back. Positions count the released text
    without format characters, as the look-back does; a detector without hints is always
    run. Detectors with the same hints (the number-shaped ones: a digit) share a search."""

    __slots__ = ("_detectors", "_gate", "_hint_of", "_hints", "_live_until", "_overlap",
                 "_reach", "_released", "_seen")

    def __init__(self, scanner: Scanner) -> None:
        index = scanner.hint_index
        self._detectors = scanner.detectors
        self._gate, self._hints, self._hint_of = index.gate, index.hints, index.hint_of
        self._reach, self._overlap = index.reach, index.overlap
        self._released = 0
        # Where each hint last occurred (its last match's end, less one); never, at first.
        self._seen = [-1 << 62] * len(self._hints)
        self._live_until = -1  # past this, no detector's look-back holds a hint it saw

    def due(self, context: str, fresh: str) -> Sequence[Detector] | None:
        """The detectors to run on `context + fresh` (the look-back and the text after it,
        both without format characters): None for all of them."""
        if self._gate is None:
            return None
        probe = context[-self._overlap:] + fresh if self._overlap and context else fresh
        fresh_hit = self._gate.search(probe) is not None
        released = self._released
        if not fresh_hit and released > self._live_until:
            return ()
        seen = self._seen
        in_probe = ([hint.search(probe) is not None for hint in self._hints] if fresh_hit
                    else [False] * len(self._hints))
        return [detector for detector, hint in zip(self._detectors, self._hint_of, strict=True)
                if in_probe[hint] or seen[hint] >= released - detector.reach]

    def released(self, context: str, text: str) -> None:
        """`text` (without format characters) was released after `context`: remember its
        hints."""
        if self._gate is not None:
            probe = context[-self._overlap:] + text if self._overlap and context else text
            if self._gate.search(probe) is not None:
                base = self._released - (len(probe) - len(text)) - 1
                for index, hint in enumerate(self._hints):
                    last = None
                    for last in hint.finditer(probe):  # noqa: B007 (the last one is wanted)
                        pass
                    if last is not None:
                        # Its end, less one: no earlier than where any hint the search
                        # stepped over (one overlapping that match) began.
                        self._seen[index] = max(self._seen[index], base + last.end())
                        self._live_until = max(self._live_until,
                                               self._seen[index] + self._reach[index])
        self._released += len(text)


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
    in what is kept. Format characters count as part of the run they sit in."""
    view = without_format(text)
    if view is None:
        return _settled_cut(text, cut)
    proposed = view.position(cut)
    settled = _settled_cut(view.text, proposed)
    return cut if settled == proposed else view.original(settled)


def _settled_cut(text: str, cut: int) -> int:
    end = len(text)
    floor = max(0, cut - MAX_HOLD_BACK)
    if cut == end and _DIGIT.search(text, max(0, floor - MAX_HOLD_BACK)) is None:
        # Without a digit only the first kind of run can be near the end (the others hold
        # digits), and those never overlap: the cut goes back to where the last one starts,
        # if it touches the end. This is every word a stream releases.
        last_run = _RUN_AT_END.search(text, floor)
        return end if last_run is None else last_run.start()
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
    all of it, unless its last run may be the first half of a value, which no detector can
    recognise and nobody should see: it holds a digit or an @ (a number, an address), or a
    word in it starts like a secret (`sk-proj-AbC…`, too short yet to be taken for a key)."""
    cut = settled_cut(text, len(text))
    last_run = strip_format(text[cut:])
    if _PARTIAL_VALUE.search(last_run) or _SECRET_START.search(last_run):
        return cut
    return len(text)
