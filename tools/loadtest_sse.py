"""The two streaming dialects `hello-ship loadtest` speaks, read from raw SSE bytes.

A load tester has to read frames faster than the service under test writes them, so this is
not a general SSE parser: it splits the body on blank lines itself (any of the three line ends
the SSE standard allows, even split across reads) and looks at just the `event:` and `data:`
fields. Each dialect turns one event into what the measurement needs: text arrived (and
whether it was empty), the server's own output token count, the end of the answer, or an
error code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tools.loadtest_prompts import Prompt

MAX_EVENT = 1 << 20  # bytes of one event still without its blank line; more is not a stream


class EventSplitter:
    """Splits a body arriving in pieces into `(event name, data)` pairs, as SSE defines them:
    events end at a blank line; comments (heartbeats) and events without data are dropped.
    An event growing past `MAX_EVENT` raises `MalformedFrame`: each read rescans what is
    pending, so an endless one would cost the client time that belongs to every stream."""

    __slots__ = ("_skip_lf", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the second half of a CRLF split across reads
        buf = self._tail + chunk if self._tail else chunk
        self._skip_lf = False
        if b"\r" in buf:
            self._skip_lf = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buf.split(b"\n\n")
        self._tail = blocks.pop()
        if len(self._tail) > MAX_EVENT:
            raise MalformedFrame(f"an event longer than {MAX_EVENT} bytes")
        events: list[tuple[bytes, bytes]] = []
        for block in blocks:
            name = b"message"
            data: list[bytes] = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                elif line.startswith(b"event:"):
                    name = line[6:].strip()
            if data:
                events.append((name, data[0] if len(data) == 1 else b"\n".join(data)))
        return events


class MalformedFrame(Exception):
    """A frame the dialect cannot read; the request counts as failed with this reason."""


@dataclass(slots=True)
class Reading:
    """What one event said. `text`: characters of answer text it carried (0 for none);
    `output_tokens`: the server's own count when it reports one; `ended`: the answer is
    complete; `error`: the stream ended with this error code."""

    text: int = 0
    output_tokens: int | None = None
    ended: bool = False
    error: str | None = None


NOTHING = Reading()


class Dialect(Protocol):
    name: str

    def body(self, prompt: Prompt, max_tokens: int | None, model: str | None) -> bytes: ...

    def read(self, event: bytes, data: bytes) -> Reading: ...

    def error_code(self, body: Any) -> str | None:
        """The error code in a refusal's JSON body, if it names one."""


def _object(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedFrame("a frame that is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedFrame("a frame that is not a JSON object")
    return value


def _count(value: Any) -> bool:
    """A token count: a whole number, not a boolean (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _error_field(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    for key in ("code", "type"):
        if isinstance(error.get(key), str) and error[key]:
            return str(error[key])
    return None


class HelloShip:
    """`POST /chat/stream`: `token`, `done` and `error` events (docs/api.md)."""

    name = "hello-ship"

    def body(self, prompt: Prompt, max_tokens: int | None, model: str | None) -> bytes:
        request: dict[str, Any] = {"messages": prompt.messages}
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        return orjson.dumps(request)

    def read(self, event: bytes, data: bytes) -> Reading:
        if event == b"token":
            token = _object(data).get("token")
            if not isinstance(token, str):
                raise MalformedFrame("a token frame without its text")
            return Reading(text=len(token)) if token else NOTHING
        if event == b"done":
            usage = _object(data).get("usage")
            output = usage.get("output_tokens") if isinstance(usage, dict) else None
            return Reading(output_tokens=output if _count(output) else None, ended=True)
        if event == b"error":
            code = _object(data).get("code")
            return Reading(ended=True, error=code if isinstance(code, str) else "error")
        return NOTHING

    def error_code(self, body: Any) -> str | None:
        return _error_field(body)


class OpenAIChat:
    """`POST /v1/chat/completions` with `stream: true`, as OpenAI and the servers compatible
    with it (vLLM, LiteLLM, hello-ship's own) answer: chunks, an optional usage chunk (asked
    for with `stream_options`), then `[DONE]`. Reasoning text counts as output, as vLLM's
    benchmark counts it."""

    name = "openai"

    def body(self, prompt: Prompt, max_tokens: int | None, model: str | None) -> bytes:
        request: dict[str, Any] = {"model": model, "messages": prompt.messages, "stream": True,
                                   "stream_options": {"include_usage": True}}
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        return orjson.dumps(request)

    def read(self, event: bytes, data: bytes) -> Reading:
        if data == b"[DONE]":
            return Reading(ended=True)
        chunk = _object(data)
        if chunk.get("error") is not None:
            return Reading(ended=True, error=_error_field(chunk) or "error")
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise MalformedFrame("a chunk whose choices are not a list")
        text = 0
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                for key in ("content", "reasoning_content", "reasoning"):
                    value = delta.get(key)
                    if isinstance(value, str):
                        text += len(value)
        usage = chunk.get("usage")
        output = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if _count(output):
            return Reading(text=text, output_tokens=output)
        return Reading(text=text) if text else NOTHING

    def error_code(self, body: Any) -> str | None:
        return _error_field(body)


DIALECTS: dict[str, Dialect] = {"hello-ship": HelloShip(), "openai": OpenAIChat()}
