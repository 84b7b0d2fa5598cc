"""The output-moderation stage every route's text passes through before it leaves.

A `Moderator` reviews released text and returns what may be shown (itself, or a redacted copy)
or raises `OutputBlocked`. A moderator that judges whole sentences asks for them with
`needs_sentences`, and the stage then holds text in a `SentenceBuffer`; one that does not,
such as the default pass-through, sees each delta at once, so it costs no time to first token.
The buffer's hold time is checked as deltas arrive; releasing held text while the provider is
silent needs a timer, which belongs with the first policy that buffers.
"""

from __future__ import annotations

from typing import Protocol

from streaming.sentences import SentenceBuffer


class OutputBlocked(Exception):
    """The text under review must not reach the client; `code` names the policy that fired."""

    def __init__(self, code: str = "output_blocked") -> None:
        super().__init__(code)
        self.code = code


class Moderator(Protocol):
    @property
    def needs_sentences(self) -> bool: ...

    def review(self, text: str) -> str: ...


class PassThrough:
    """The default policy: every delta is released as it arrives, unchanged."""

    needs_sentences = False

    def review(self, text: str) -> str:
        return text


class OutputStage:
    """One request's moderation state: a sentence buffer when the moderator wants one."""

    __slots__ = ("_buffer", "_moderator")

    def __init__(self, moderator: Moderator, buffer: SentenceBuffer | None = None) -> None:
        self._moderator = moderator
        self._buffer = (buffer or SentenceBuffer()) if moderator.needs_sentences else None

    def feed(self, text: str, now: float) -> str:
        """Moderated text to release now; '' while the buffer is holding."""
        if self._buffer is not None:
            text = self._buffer.push(text, now)
            if not text:
                return ""
        return self._moderator.review(text)

    def flush(self) -> str:
        """Moderated remainder at the end of the stream."""
        if self._buffer is None:
            return ""
        text = self._buffer.drain()
        return self._moderator.review(text) if text else ""
