"""Pure buffers for streamed text that a detector must see in units it can judge.

`WordBuffer` releases, on every push, all but what its `settle` function keeps back (the run
of characters at the end that may still grow into a value a detector must see whole): text
leaves one token after it arrived, and no clock is involved. `SentenceBuffer` is for checks
that need whole sentences (phrases, plugged-in classifiers): text is released at the last
sentence end, when the held text reaches `max_chars`, or when the oldest held character has
waited `max_hold_s`, and `settle` may move each release point back (never forward). No I/O, no
clock of their own: the caller passes `now`, which keeps them table-testable.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A sentence ends at . ! ? or an ellipsis, optionally followed by closing quotes or brackets,
# and then whitespace or the end of what is held; a line break always ends one. Chinese and
# Japanese end one at an ideographic full stop or a full-width exclamation or question mark
# (or the half-width full stop) with no space after it, so any character may follow those. A
# full-width semicolon does not end one, as ; does not: it joins the clauses of one sentence,
# and the hold time releases a long one anyway. The leading lookahead only lets the engine skip
# text that cannot start one: this runs over the held text on every token.
_SENTENCE_END = re.compile(
    r"""(?=[.!?\u2026\n\u3002\uff01\uff1f\uff61])"""
    r"""(?:[.!?\u2026]+["'\u2019\u201d)\]]*(?=\s|$)"""
    r"""|[\u3002\uff01\uff1f\uff61]+["'\u2019\u201d)\]\u300d\u300f\uff09\u3011]*|\n)""")

Settle = Callable[[str, int], int]  # (held text, proposed cut) -> the cut to make


def _as_proposed(held: str, cut: int) -> int:
    return cut


class WordBuffer:
    """Holds only what `settle` keeps back from the end; nothing waits for time, so there is
    no deadline: a clock could release no more than the last push did."""

    __slots__ = ("_held", "_settle")

    max_hold_s = 0.0

    def __init__(self, settle: Settle) -> None:
        self._settle = settle
        self._held = ""

    @property
    def held(self) -> str:
        return self._held

    def deadline(self) -> float | None:
        return None

    def push(self, text: str, now: float) -> str:
        held = self._held + text if self._held else text
        cut = self._settle(held, len(held))
        self._held = held[cut:]
        return held[:cut]

    def release_due(self, now: float) -> str:
        return ""

    def drain(self) -> str:
        released, self._held = self._held, ""
        return released


class SentenceBuffer:
    __slots__ = ("_held", "_held_since", "_settle", "max_chars", "max_hold_s")

    def __init__(self, max_chars: int = 400, max_hold_s: float = 0.6,
                 settle: Settle = _as_proposed) -> None:
        if max_chars < 1 or max_hold_s < 0:
            raise ValueError("max_chars must be >= 1 and max_hold_s >= 0")
        self.max_chars = max_chars
        self.max_hold_s = max_hold_s
        self._settle = settle
        self._held = ""
        self._held_since: float | None = None

    @property
    def held(self) -> str:
        return self._held

    def deadline(self) -> float | None:
        """When the held text must be released even without a sentence end."""
        if self._held_since is None:
            return None
        return self._held_since + self.max_hold_s

    def push(self, text: str, now: float) -> str:
        """Add streamed text; return what may be released now ('' to keep holding)."""
        if not text:
            return self.release_due(now)
        if self._held_since is None:
            self._held_since = now
        self._held += text
        if len(self._held) >= self.max_chars or now - self._held_since >= self.max_hold_s:
            return self._release(len(self._held), now, forced=True)
        cut = 0
        for sentence_end in _SENTENCE_END.finditer(self._held):
            cut = sentence_end.end()
        return self._release(cut, now, forced=False) if cut else ""

    def release_due(self, now: float) -> str:
        """Release what may go if the hold time has run out, else nothing."""
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self._release(len(self._held), now, forced=True)
        return ""

    def drain(self) -> str:
        """Everything held: the stream has ended, nothing more can follow."""
        released, self._held, self._held_since = self._held, "", None
        return released

    def _release(self, cut: int, now: float, *, forced: bool) -> str:
        cut = self._settle(self._held, cut)
        released, self._held = self._held[:cut], self._held[cut:]
        if not self._held:
            self._held_since = None
        elif released or forced:
            # What is kept back starts a new hold, so a deadline passed does not fire again
            # at once. A sentence end kept back whole (it ends in a number that may go on)
            # does not: every token would propose it again and the hold would never run out.
            self._held_since = now
        return released


# Sentence-end marks with their closing quotes are never longer than this in real text.
_LONGEST_END = 16


def ends_sentence(text: str, cut: int) -> bool:
    """Whether `text[:cut]` ends at a sentence end (a release there splits no sentence)."""
    return any(end.end() == cut
               for end in _SENTENCE_END.finditer(text, max(0, cut - _LONGEST_END), cut))
