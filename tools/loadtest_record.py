"""One request of a load test, as it happened: when it was due and sent, when each piece of
text arrived, how it ended.

`Recorder` is fed by the HTTP connection (status, body pieces with the time they were read,
the end or a failure) and reads the body with a dialect as it comes, so nothing but numbers is
kept: not the answer's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tools.loadtest_sse import Dialect, EventSplitter, MalformedFrame

MAX_ERROR_BODY = 65_536  # of a refusal's body, read for its error code


@dataclass(slots=True)
class RequestRecord:
    """Times are seconds on the run's clock (`time.perf_counter`)."""

    index: int
    level: int
    warmup: bool
    due: float  # when the load model wanted it sent
    sent: float | None = None
    first_text: float | None = None
    ended: float | None = None  # the answer complete
    closed: float | None = None  # the request over, well or not
    text_frames: int = 0  # frames that carried answer text
    output_tokens: int | None = None  # the server's own count, when it reports one
    gaps: list[float] = field(default_factory=list)  # between frames that carried text
    status: int | None = None
    request_id: str | None = None
    error: str | None = None
    new_connection: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.ended is not None

    @property
    def ttft(self) -> float | None:
        if self.first_text is None or self.sent is None:
            return None
        return self.first_text - self.sent

    @property
    def e2e(self) -> float | None:
        return None if self.ended is None or self.sent is None else self.ended - self.sent

    @property
    def tokens(self) -> int:
        """Output tokens: the server's count when it gave one, else frames with text."""
        return self.output_tokens if self.output_tokens is not None else self.text_frames

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (e2e - TTFT) / (tokens - 1)."""
        ttft, e2e = self.ttft, self.e2e
        if not self.ok or ttft is None or e2e is None or self.tokens < 2:
            return None
        return (e2e - ttft) / (self.tokens - 1)


class Recorder:
    """Turns what the connection reads into a `RequestRecord`."""

    __slots__ = ("_body", "_dialect", "_finished_stream", "_last_text", "_splitter", "record")

    def __init__(self, record: RequestRecord, dialect: Dialect) -> None:
        self.record = record
        self._dialect = dialect
        self._splitter = EventSplitter()
        self._body = bytearray()
        self._last_text = 0.0
        self._finished_stream = False

    @property
    def done(self) -> bool:
        return self.record.ended is not None or self.record.error is not None

    @property
    def stream_broken(self) -> bool:
        """The body broke the protocol: the rest of it cannot be trusted to be read."""
        return self.record.error is not None and self.record.error.startswith("malformed")

    @property
    def stream_complete(self) -> bool:
        """The dialect's last frame has arrived."""
        return self._finished_stream

    def started(self, status: int, request_id: str | None, event_stream: bool) -> None:
        self.record.status = status
        self.record.request_id = request_id
        if 200 <= status < 300 and not event_stream:
            self.record.error = "not an event stream"

    def body(self, chunk: bytes, now: float) -> None:
        record = self.record
        if record.error is not None:
            return
        if record.status is None or not 200 <= record.status < 300:
            if len(self._body) < MAX_ERROR_BODY:
                self._body += chunk[:MAX_ERROR_BODY - len(self._body)]
            return
        try:
            events = self._splitter.feed(chunk)
            for event, data in events:
                reading = self._dialect.read(event, data)
                if reading.text:
                    if record.first_text is None:
                        record.first_text = now
                    else:
                        record.gaps.append(now - self._last_text)
                    self._last_text = now
                    record.text_frames += 1
                if reading.output_tokens is not None:
                    record.output_tokens = reading.output_tokens
                if reading.error is not None:
                    record.error = f"stream {reading.error}"
                    return
                if reading.ended:
                    self._finished_stream = True
        except MalformedFrame as problem:
            record.error = f"malformed frame: {problem}"

    def finished(self, now: float) -> None:
        """The response's body is complete."""
        record = self.record
        if record.error is not None:
            return
        if record.status is None or not 200 <= record.status < 300:
            record.error = f"http {record.status}" + (f" {code}" if (code := self._code()) else "")
        elif not self._finished_stream:
            record.error = "truncated"  # the body ended without the dialect's last frame
        else:
            record.ended = now

    def failed(self, reason: str) -> None:
        if self.record.error is None and self.record.ended is None:
            self.record.error = reason

    def _code(self) -> str | None:
        try:
            body: Any = orjson.loads(bytes(self._body))
        except orjson.JSONDecodeError:
            return None
        return self._dialect.error_code(body)
