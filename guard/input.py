"""The input guard: the caller's messages checked before any provider sees them.

Pure: it takes texts and answers with what may be sent (possibly redacted) or which category
made it refuse. It never returns the offending text, so nothing downstream can echo it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from guard.detectors import Detector, Finding
from guard.policy import GuardPolicy
from guard.scan import Scanner, redact


@dataclass(frozen=True, slots=True)
class InputVerdict:
    texts: tuple[str, ...]  # what may be sent, in order; empty when refused
    refused: Finding | None = None  # the first finding of a category it refuses
    redactions: Counter[str] = field(default_factory=Counter)  # detector -> values redacted


class InputGuard:
    """One policy's input guard: detectors of the categories it does not allow."""

    __slots__ = ("_policy", "_scanner")

    def __init__(self, detectors: Sequence[Detector], policy: GuardPolicy) -> None:
        self._policy = policy
        self._scanner = Scanner([detector for detector in detectors
                                 if policy.on_input(detector.category) != "allow"])

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors it runs: those of the categories its policy does not allow."""
        return self._scanner.detectors

    def check(self, texts: Sequence[str]) -> InputVerdict:
        if not self._scanner:
            return InputVerdict(tuple(texts))
        redactions: Counter[str] = Counter()
        cleaned: list[str] = []
        for text in texts:
            findings = self._scanner.findings(text)
            for finding in findings:
                if self._policy.on_input(finding.category) == "refuse":
                    return InputVerdict((), refused=finding)
            redactions.update(finding.detector for finding in findings)
            cleaned.append(redact(text, findings) if findings else text)
        return InputVerdict(tuple(cleaned), redactions=redactions)
