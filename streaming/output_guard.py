"""The output guard: every route's text passes through it before it leaves, on both endpoints.

With nothing to detect (every category allowed) the stage passes each delta straight through
and costs nothing. Otherwise text is held back only as long as it could still become part of
a value a detector must see whole (`WordBuffer` with `settled_cut`: a word at the end that may
grow into an email address, digit groups that may grow into a card number), so with the
built-in detectors text leaves one token after it arrived. Checks whose matches may span
words the hold back does not know (blocked phrases, plugged-in detectors) ask for whole
sentences instead (`SentenceBuffer`, released at a sentence end or after the hold time).
Each release is scanned before it is sent, with look-back into what was already released. A
finding is then redacted in place, or stops the answer (`OutputBlocked`), per its category.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace

from guard.detectors import Category, Finding
from guard.policy import GuardPolicy
from guard.scan import HintTrail, Scanner, cut_off_end, redact, settled_cut
from guard.text import strip_format, without_format
from streaming.sentences import SentenceBuffer, WordBuffer, ends_sentence


class OutputBlocked(Exception):
    """The text under review must not reach the client; says which detector fired, never
    the text."""

    def __init__(self, detector: str, category: Category) -> None:
        super().__init__(f"{category}:{detector}")
        self.detector = detector
        self.category = category


@dataclass(frozen=True, slots=True)
class OutputGuard:
    """One policy's output guard, shared by its requests: detectors of the categories the
    policy does not allow, what it does on a finding, and whether its checks need whole
    sentences (then how long text may be held for one)."""

    scanner: Scanner
    policy: GuardPolicy
    max_chars: int = 400
    max_hold_s: float = 0.1
    whole_sentences: bool = False
    # Characters kept back when a release is forced mid-sentence (by the hold time or the
    # buffer size), for detectors whose values the hold back of `settled_cut` does not know
    # (blocked phrases, plugged-in detectors): their longest match, so a phrase still being
    # written waits until it is whole.
    phrase_hold_back: int = 0

    @property
    def active(self) -> bool:
        return bool(self.scanner)


class OutputStage:
    """One request's output guard state."""

    __slots__ = ("_blocked", "_buffer", "_context", "_guard", "_tail_redacted", "_trail",
                 "redactions")

    def __init__(self, guard: OutputGuard | None = None) -> None:
        self._guard = guard if guard is not None and guard.active else None
        self._buffer: SentenceBuffer | WordBuffer | None = None
        if self._guard is not None:
            self._buffer = (SentenceBuffer(
                self._guard.max_chars, self._guard.max_hold_s,
                self._settle if self._guard.phrase_hold_back else settled_cut)
                if self._guard.whole_sentences else WordBuffer(settled_cut))
        self._context = ""  # the end of the text released, less format characters: look-back
        self._trail = HintTrail(self._guard.scanner) if self._guard is not None else None
        self._tail_redacted = False  # the last release ended inside a redacted value
        self._blocked = False  # a finding stopped the answer: nothing more leaves
        self.redactions: Counter[str] = Counter()  # detector -> values redacted

    @property
    def holds_for_time(self) -> bool:
        """Held text may be due for release while the provider is quiet: a timer must
        watch `deadline`."""
        return isinstance(self._buffer, SentenceBuffer)

    @property
    def hold_s(self) -> float:
        return self._buffer.max_hold_s if self._buffer is not None else 0.0

    def deadline(self) -> float | None:
        """When held text is due to be released even though the provider is quiet."""
        return self._buffer.deadline() if self._buffer is not None else None

    def feed(self, text: str, now: float) -> str:
        """Guarded text to release now; '' while holding. Raises `OutputBlocked`."""
        if self._buffer is None:
            return text
        return self._review(self._buffer.push(text, now))

    def release_due(self, now: float) -> str:
        """Guarded text whose hold time has run out."""
        if self._buffer is None:
            return ""
        return self._review(self._buffer.release_due(now))

    def flush(self, complete: bool = True) -> str:
        """The guarded remainder when the stream ends. An answer that broke off loses a last
        run that may be half a value (see `cut_off_end`)."""
        if self._buffer is None:
            return ""
        held = self._buffer.drain()
        return self._review(held if complete else held[:cut_off_end(held)])

    def _settle(self, held: str, cut: int) -> int:
        """`settled_cut`; and a cut proposed inside a sentence (by the hold time or the buffer
        size) also keeps back the guard's `phrase_hold_back`, for detectors whose values the
        scan's own hold back does not know."""
        assert self._guard is not None
        inside_sentence = not ends_sentence(held, cut)
        cut = settled_cut(held, cut)
        return min(cut, phrase_cut(held, self._guard.phrase_hold_back)) if inside_sentence else cut

    def _review(self, raw: str) -> str:
        if self._blocked:
            return ""
        if not raw or self._guard is None:
            return raw
        try:
            return self._scan(self._guard, raw)
        except BaseException:
            # Refused, or a detector failed: fail closed, nothing held or later leaves.
            self._blocked = True
            if self._buffer is not None:
                self._buffer.drain()
            raise

    def _scan(self, guard: OutputGuard, raw: str) -> str:
        """`raw`, about to be released, scanned together with what was released before it
        (a value that began there) and what is still held after it (a value that begins in
        `raw` and ends there, as when a long run is cut): either way its part in `raw` is
        redacted, and a value running on is remembered so its rest is dropped later."""
        since = len(self._context)
        upto = since + len(raw)
        held = self._buffer.held if self._buffer is not None else ""
        policy, trail = guard.policy, self._trail
        assert trail is not None
        # Kept without format characters, so no release searches the whole look-back for one.
        plain = strip_format(raw)
        due = trail.due(self._context, plain + strip_format(held))
        released, findings = "", []
        if due is None or due:  # most releases of prose have no detector due: no look-back
            released = self._context + raw
            findings = [finding for finding in guard.scanner.findings(
                            released + held, since, stripped_upto=since, only=due)
                        if finding.start < upto
                        and policy.on_output(finding.category) != "allow"]
        trail.released(self._context, plain)
        context, reach = self._context + plain, guard.scanner.reach
        self._context = context[-reach:] if len(context) > reach else context
        if not findings:
            self._tail_redacted = False
            return raw
        for finding in findings:
            if policy.on_output(finding.category) == "block":
                raise OutputBlocked(finding.detector, finding.category)
        clipped = [replace(finding, end=min(finding.end, upto)) for finding in findings]
        text = redact(released, clipped, since, continued="" if self._tail_redacted else None)
        self._count(findings, since)
        self._tail_redacted = max(finding.end for finding in findings) >= upto
        return text

    def _count(self, findings: list[Finding], since: int) -> None:
        for finding in findings:
            if finding.start >= since or not self._tail_redacted:
                self.redactions[finding.detector] += 1


# Through the last whitespace before the end of the search: where the last word starts.
_THROUGH_LAST_SPACE = re.compile(r".*\s", re.DOTALL)
# A run without spaces longer than this is no word (a URL, a clause of Chinese): it may be
# cut inside.
_LONGEST_WORD = 32


def phrase_cut(held: str, hold_back: int) -> int:
    """The last point in `held` with `hold_back` characters a detector reads after it
    (format characters, which detectors never see, do not count), moved back to a word's
    start, so a phrase still being written stays whole in what is kept."""
    view = without_format(held)
    readable = len(held) if view is None else len(view.text)
    if readable <= hold_back:
        return 0
    keep_from = (readable - hold_back if view is None
                 else view.original(readable - hold_back))
    through_space = _THROUGH_LAST_SPACE.match(held, 0, keep_from)
    if through_space is not None:
        return through_space.end()
    return 0 if keep_from <= _LONGEST_WORD else keep_from
