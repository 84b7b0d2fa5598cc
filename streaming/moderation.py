"""The output guard: every route's text passes through it before it leaves, on both endpoints.

With nothing to detect (every category allowed) the stage passes each delta straight through
and costs nothing. Otherwise text is held in a `SentenceBuffer` and each release is scanned
before it is sent: with look-back into what was already released, and with release points
moved back so no value that a detector must see whole is cut in two (see `guard.scan`). A
finding is then redacted in place, or stops the answer (`OutputBlocked`), per its category.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from guard.detectors import Category, Finding
from guard.policy import GuardPolicy
from guard.scan import Scanner, cut_off_end, redact, settled_cut
from streaming.sentences import SentenceBuffer


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
    policy does not allow, what it does on a finding, and how long text may be held."""

    scanner: Scanner
    policy: GuardPolicy
    max_chars: int = 400
    max_hold_s: float = 0.1

    @property
    def active(self) -> bool:
        return bool(self.scanner)


class OutputStage:
    """One request's output guard state."""

    __slots__ = ("_blocked", "_buffer", "_context", "_guard", "_tail_redacted", "redactions")

    def __init__(self, guard: OutputGuard | None = None) -> None:
        self._guard = guard if guard is not None and guard.active else None
        self._buffer = (SentenceBuffer(guard.max_chars, guard.max_hold_s, settled_cut)
                        if self._guard is not None and guard is not None else None)
        self._context = ""  # the end of the raw text already released, for look-back
        self._tail_redacted = False  # the last release ended inside a redacted value
        self._blocked = False  # a finding stopped the answer: nothing more leaves
        self.redactions: Counter[str] = Counter()  # detector -> values redacted

    @property
    def buffers(self) -> bool:
        return self._buffer is not None

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

    def _review(self, raw: str) -> str:
        guard = self._guard
        if self._blocked:
            return ""
        if not raw or guard is None:
            return raw
        since = len(self._context)
        text = self._context + raw
        policy = guard.policy
        findings = [finding for finding in guard.scanner.findings(text, since)
                    if policy.on_output(finding.category) != "allow"]
        reach = guard.scanner.reach
        self._context = text[-reach:] if len(text) > reach else text
        if not findings:
            self._tail_redacted = False
            return raw
        for finding in findings:
            if policy.on_output(finding.category) == "block":
                # Whatever is still held, or arrives while the upstream call is closed,
                # stays here: the answer ends at this finding.
                self._blocked = True
                if self._buffer is not None:
                    self._buffer.drain()
                raise OutputBlocked(finding.detector, finding.category)
        released = redact(text, findings, since, continued="" if self._tail_redacted else None)
        self._count(findings, since)
        self._tail_redacted = max(finding.end for finding in findings) >= len(text)
        return released

    def _count(self, findings: list[Finding], since: int) -> None:
        for finding in findings:
            if finding.start >= since or not self._tail_redacted:
                self.redactions[finding.detector] += 1
