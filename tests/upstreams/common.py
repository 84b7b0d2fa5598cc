"""What every fake vendor shares: the script of what to do, and a record of what happened.

Each fake is a real HTTP server on 127.0.0.1 (uvicorn in a thread) speaking one vendor's wire
format, so the official SDK under test runs its own HTTP and parsing stack against it. A test
sets `upstream.script` before a request to choose the answer or the fault; the vendor module
only says how its frames look (`Wire`).

Embedding endpoints answer `fake_embedding` of each text: deterministic across processes, so a
test can compute the vector a fake will send. Their faults are set apart from the chat
script, so an embedding taken before a completion (a semantic cache's lookup) never uses up
the completion's queued script:

    upstream.embedding_status = 503    # refuse every embedding request with this status
    upstream.embedding_delay_s = 2.0   # wait this long before answering (or refusing)
    upstream.embedding_body = b"{"     # answer 200 with these bytes as they are

`reset()` sets all three back (None, 0.0, None): embeddings answered at once.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tests.servers import thread_server

Outcome = Literal["completed", "client_closed", "dropped"]


class DroppedConnection(Exception):
    """Raised inside a response body: uvicorn then cuts the connection mid-body."""


@dataclass
class Script:
    """One answer, or one fault.

    The default usage numbers differ from the token count on purpose, so a test can tell the
    vendor's numbers from the service's own count.
    """

    tokens: tuple[str, ...] = ("Hello", ",", " world", "!")
    input_tokens: int = 17
    output_tokens: int = 9
    finish: str | None = None  # the vendor's own stop reason; None: its normal one
    cache_read_tokens: int = 0  # input tokens served from the vendor's prompt cache
    short_delta_usage: bool = False  # Anthropic: message_delta repeats input_tokens alone
    token_delay_s: float = 0.0
    first_token_s: float = 0.0  # after the opening frames, before the first token: a model's TTFT
    status: int | None = None  # refuse with this HTTP status and the vendor's error body
    error_code: str | None = None  # the vendor's error type/code for `status`; else its usual
    retry_after: str | None = None
    hang_s: float | None = None  # wait this long before the first byte (headers included)
    stall_s: float | None = None  # send the headers and opening, then wait this long
    # Faults after this many tokens; len(tokens) means after the last token, before the end.
    drop_after: int | None = None  # cut the connection mid-body
    malformed_after: int | None = None  # send a broken chunk
    stream_error_after: int | None = None  # send the vendor's in-stream error event
    stream_error: str | None = None  # that event's error type; else the vendor's usual
    end_after: int | None = None  # end the body cleanly, unfinished
    drop_before_last: bool = False  # cut the connection before the closing sequence's last frame
    # A frame of the test's own making (a wrongly shaped chunk), sent as it is before token
    # `raw_after` (len(tokens): before the closing sequence); the answer then goes on.
    raw_chunk: bytes | None = None
    raw_after: int = 0


@dataclass
class Quota:
    """The vendor's rate limit as its headers report it on every completion response (an
    answer or a refusal), counted down as requests arrive: one request and
    `tokens_per_request` tokens each, as vendors reserve them up front."""

    requests_limit: int = 100
    requests_remaining: int = 100
    tokens_limit: int = 10_000
    tokens_remaining: int = 10_000
    tokens_per_request: int = 100
    reset_s: float = 60.0  # until the window resets, as reported
    raw: dict[str, str] | None = None  # sent as they are instead: malformed headers

    def take(self) -> None:
        self.requests_remaining = max(self.requests_remaining - 1, 0)
        self.tokens_remaining = max(self.tokens_remaining - self.tokens_per_request, 0)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    json: Any
    client_port: int | None  # the same port on two requests means one pooled connection
    at: float  # time.monotonic() when it arrived
    raw: bytes = b""  # the body as it came


@dataclass
class Upstream:
    """A running fake vendor: its URL, the key it accepts, the script it plays, what it saw."""

    api_key: str
    # Keys accepted besides `api_key`, as a vendor accepts old and new during a rotation.
    also_accepted: set[str] = field(default_factory=set)
    script: Script = field(default_factory=Script)
    # Scripts for the next completion (or moderation) requests, one each, before `script`
    # applies again.
    queue: list[Script] = field(default_factory=list)
    url: str = ""
    quota: Quota | None = None  # rate-limit headers on completion responses; None: none
    requests: list[Received] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    # Embedding requests' faults (see the module's docstring); not taken from `script`.
    embedding_status: int | None = None
    embedding_delay_s: float = 0.0
    embedding_body: bytes | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def record(self, outcome: Outcome) -> None:
        with self._changed:
            self.outcomes.append(outcome)
            self._changed.notify_all()

    def wait_for_outcomes(self, count: int = 1, timeout: float = 5.0) -> list[Outcome]:
        """Block until `count` streams have ended, then say how each one ended."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.outcomes) >= count, timeout):
                raise AssertionError(f"the upstream saw {len(self.outcomes)} of {count} "
                                     "streams end in time")
            return list(self.outcomes)

    def __post_init__(self) -> None:
        self._accepted_key = self.api_key

    def reset(self) -> None:
        """Back to a fresh server's state, so one server can serve many tests."""
        with self._changed:
            self.api_key = self._accepted_key
            self.also_accepted.clear()
            self.script = Script()
            self.quota = None
            self.queue.clear()
            self.requests.clear()
            self.outcomes.clear()
            self.embedding_status = None
            self.embedding_delay_s = 0.0
            self.embedding_body = None

    def take_script(self) -> Script:
        with self._changed:
            return self.queue.pop(0) if self.queue else self.script

    @property
    def last(self) -> Received:
        return self.requests[-1]


class Wire(Protocol):
    """How one vendor's streamed answer and errors look on the wire."""

    media_type: str
    auth_status: int  # what the vendor answers a bad credential with

    def opening(self, script: Script, model: str) -> list[bytes]: ...

    def token(self, text: str) -> bytes: ...

    def closing(self, script: Script) -> list[bytes]: ...

    def malformed(self) -> bytes: ...

    def stream_error(self, error_type: str | None) -> bytes: ...

    def error(self, status: int, script: Script, presented_key: str) -> Response: ...

    def quota_headers(self, quota: Quota) -> dict[str, str]:
        """The vendor's rate-limit headers for this state of its quota."""


def turn_order_problem(body: dict[str, Any]) -> Literal["first", "repeat"] | None:
    """What Anthropic and Bedrock refuse about turns: not starting with the user, or two
    turns of one role in a row."""
    roles = [message.get("role") for message in body.get("messages", [])]
    if not roles or roles[0] != "user":
        return "first"
    if any(a == b for a, b in itertools.pairwise(roles)):
        return "repeat"
    return None


async def hang(request: Request, seconds: float) -> bool:
    """Sleep before answering, but stop once the client has gone; says whether it has."""
    deadline = anyio.current_time() + seconds
    while anyio.current_time() < deadline:
        if await request.is_disconnected():
            return True
        await anyio.sleep(0.02)
    return False


async def receive(upstream: Upstream, request: Request) -> Received:
    body = await request.body()
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    port = request.client.port if request.client else None
    entry = Received(request.url.path, dict(request.headers), parsed, port, time.monotonic(),
                     body)
    upstream.requests.append(entry)
    return entry


async def answer(upstream: Upstream, wire: Wire, request: Request, model: str,
                 presented_key: str, headers: dict[str, str] | None = None) -> Response:
    """The scripted answer: an error response, or a stream with the scripted fault; with the
    quota's rate-limit headers on either."""
    script = upstream.take_script()
    quota: dict[str, str] = {}
    if upstream.quota is not None:
        upstream.quota.take()
        raw = upstream.quota.raw
        quota = raw if raw is not None else wire.quota_headers(upstream.quota)
    refused = await refusal(upstream, wire, request, presented_key, script)
    if refused is not None:
        refused.headers.update(quota)
        return refused
    return StreamingResponse(_frames(upstream, wire, script, model),
                             media_type=wire.media_type, headers={**(headers or {}), **quota})


async def refusal(upstream: Upstream, wire: Wire, request: Request, presented_key: str,
                  script: Script | None = None) -> Response | None:
    """The scripted hang, a refused key or the scripted error status, for any endpoint;
    None when the request is to be answered."""
    script = script or upstream.script
    if script.hang_s and await hang(request, script.hang_s):
        upstream.record("client_closed")
        return Response(status_code=499)  # nobody reads it: the client has gone
    if presented_key != upstream.api_key and presented_key not in upstream.also_accepted:
        return wire.error(wire.auth_status, script, presented_key)
    if script.status is not None:
        return wire.error(script.status, script, presented_key)
    return None


async def embedding_refusal(upstream: Upstream, wire: Wire, request: Request,
                            presented_key: str) -> Response | None:
    """The embedding faults: the delay, a refused key, the status or the raw body; None when
    the request is to be answered. Nothing is recorded in `outcomes`, which counts streams."""
    if upstream.embedding_delay_s and await hang(request, upstream.embedding_delay_s):
        return Response(status_code=499)  # nobody reads it: the client has gone
    if presented_key != upstream.api_key and presented_key not in upstream.also_accepted:
        return wire.error(wire.auth_status, Script(), presented_key)
    if upstream.embedding_status is not None:
        return wire.error(upstream.embedding_status, Script(), presented_key)
    if upstream.embedding_body is not None:
        return Response(upstream.embedding_body, media_type="application/json")
    return None


_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def fake_embedding(text: str, dimensions: int, *, normalize: bool = True) -> list[float]:
    """A hashed bag of words: each word adds +1 or -1 at an index its hash chooses.

    Case, order and punctuation do not count, so texts of the same words have cosine 1.0 and
    texts sharing most of their words a high one. The hash is blake2b, not `hash()`, which
    is salted per process: the fake and a test compute the same vector. A text of no word at
    all is one word as it is, so no vector is zero. Unit length unless `normalize` is False.
    """
    folded = text.casefold()
    vector = [0.0] * dimensions
    for word in _WORD.findall(folded) or [folded.strip()]:
        number = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
        vector[number % dimensions] += 1.0 if number >> 63 else -1.0
    if normalize:
        # Two words of opposite signs at one index can cancel out all a short text has.
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        vector = [value / norm for value in vector]
    return vector


def fake_token_count(text: str) -> int:
    """The tokens an embedding endpoint bills for `text`: its words and punctuation marks."""
    return max(len(_TOKEN.findall(text)), 1)


async def _frames(upstream: Upstream, wire: Wire, script: Script,
                  model: str) -> AsyncIterator[bytes]:
    outcome: Outcome = "client_closed"
    try:
        for frame in _plan(wire, script, model):
            if frame is _DROP:
                outcome = "dropped"
                raise DroppedConnection("scripted drop")
            if frame is _PAUSE:
                await anyio.sleep(script.token_delay_s)
                continue
            if frame is _THINK:
                await anyio.sleep(script.first_token_s)
                continue
            if frame is _STALL:
                await anyio.sleep(script.stall_s or 0)
                continue
            yield frame
        outcome = "completed"
    finally:
        upstream.record(outcome)


_DROP = b"<drop>"
_PAUSE = b"<pause>"
_THINK = b"<think>"
_STALL = b"<stall>"


def _plan(wire: Wire, script: Script, model: str) -> Iterator[bytes]:
    yield from wire.opening(script, model)
    if script.stall_s:
        yield _STALL
    if script.first_token_s:
        yield _THINK
    for index in range(len(script.tokens) + 1):
        if script.raw_chunk is not None and index == script.raw_after:
            yield script.raw_chunk
        if index == script.drop_after:
            yield _DROP
        if index == script.malformed_after:
            yield wire.malformed()
            return
        if index == script.stream_error_after:
            yield wire.stream_error(script.stream_error)
            return
        if index == script.end_after:
            return
        if index == len(script.tokens):
            break
        if index and script.token_delay_s:
            yield _PAUSE
        yield wire.token(script.tokens[index])
    closing = wire.closing(script)
    if script.drop_before_last:
        closing[-1] = _DROP
    yield from closing


@contextmanager
def serve(app: Starlette, upstream: Upstream) -> Iterator[Upstream]:
    with thread_server(app) as live:
        upstream.url = live.url
        yield upstream
