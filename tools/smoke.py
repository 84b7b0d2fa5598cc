"""`hello-ship smoke URL`: the post-deploy check that a running service really answers.

Three steps, each printed with its timing, all within one overall timeout: `/ready` is 200,
`/chat` gives a non-empty answer, and `/chat/stream` sends a token and then `done`. The first
failure stops the run with a line saying what was wrong (and the request id to look up).

Each step runs under the time left of the overall deadline as a whole, not per read: a server
that trickles its body a byte at a time, or a stream kept alive by heartbeats alone, fails
when the time is up. Answers are read by tools.wire, as `hello-ship eval` reads them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

import anyio
import httpx2

from tools.wire import (
    Done,
    Failed,
    MalformedResponse,
    Token,
    chat_body,
    envelope_code,
    read_frames,
    service_client,
)

SMOKE_MESSAGE = "Smoke test: reply with a short greeting."


@dataclass
class _Progress:
    """How far a step got, for the line printed when its time runs out."""

    request_id: str = "?"
    tokens: int = 0

    def read(self, response: httpx2.Response) -> None:
        self.request_id = response.headers.get("x-request-id", "?")


Step = Callable[[httpx2.AsyncClient, str, _Progress], Awaitable[tuple[bool, str]]]


def run_smoke(url: str, *, key: str | None, timeout_s: float, out: TextIO,
              message: str = SMOKE_MESSAGE) -> bool:
    return anyio.run(_run, url, key, timeout_s, out, message)


async def _run(url: str, key: str | None, timeout_s: float, out: TextIO, message: str) -> bool:
    started = time.monotonic()
    deadline = started + timeout_s
    steps: list[tuple[str, Step]] = [("ready", _ready), ("chat", _chat), ("stream", _stream)]
    async with service_client(url, key, timeout_s) as client:
        for name, step in steps:
            step_started = time.monotonic()
            ok, detail = await _timed(step, client, message, deadline - step_started, url,
                                      timeout_s, name)
            elapsed_ms = (time.monotonic() - step_started) * 1000
            out.write(f"{'ok  ' if ok else 'FAIL'}  {name:<7} {detail} ({elapsed_ms:.0f} ms)\n")
            if not ok:
                return False
    out.write(f"smoke passed in {(time.monotonic() - started) * 1000:.0f} ms\n")
    return True


async def _timed(step: Step, client: httpx2.AsyncClient, message: str, remaining: float,
                 url: str, timeout_s: float, name: str) -> tuple[bool, str]:
    if remaining <= 0:
        return False, f"no time left of the {timeout_s:g} s timeout"
    progress = _Progress()
    try:
        with anyio.fail_after(remaining):
            return await step(client, message, progress)
    except (TimeoutError, httpx2.TimeoutException):
        if name == "stream":
            return False, (f"no done frame within the {timeout_s:g} s timeout "
                           f"({progress.tokens} tokens), request {progress.request_id}")
        return False, (f"no answer within the {timeout_s:g} s timeout"
                       f"{_request(progress)}")
    except MalformedResponse as exc:
        return False, f"malformed answer: {exc}{_request(progress)}"
    except httpx2.HTTPError as exc:
        return False, f"cannot reach {url}: {type(exc).__name__}"


def _request(progress: _Progress) -> str:
    return "" if progress.request_id == "?" else f", request {progress.request_id}"


async def _ready(client: httpx2.AsyncClient, message: str,
                 progress: _Progress) -> tuple[bool, str]:
    response = await client.get("/ready")
    if response.status_code != 200:
        return False, f"/ready is {response.status_code}: {_reasons(response)}"
    return True, "/ready is 200"


async def _chat(client: httpx2.AsyncClient, message: str,
                progress: _Progress) -> tuple[bool, str]:
    async with client.stream("POST", "/chat", json={"message": message}) as response:
        progress.read(response)  # before the body, so a body that never ends still names it
        await response.aread()
    if response.status_code != 200:
        return False, (f"/chat is {response.status_code} ({_error_code(response)}), "
                       f"request {progress.request_id}")
    body = chat_body(response.content)
    if not body.answer.strip():
        return False, f"/chat gave an empty answer, request {progress.request_id}"
    return True, f"/chat answered {len(body.answer)} characters from {body.model_route or '?'}"


async def _stream(client: httpx2.AsyncClient, message: str,
                  progress: _Progress) -> tuple[bool, str]:
    started = time.monotonic()
    first_token_ms: float | None = None
    async with client.stream("POST", "/chat/stream", json={"message": message}) as response:
        progress.read(response)
        request = f"request {progress.request_id}"
        if response.status_code != 200:
            await response.aread()
            return False, (f"/chat/stream is {response.status_code} "
                           f"({_error_code(response)}), {request}")
        terminal: Done | Failed | None = None
        async for frame in read_frames(response):  # to the end: nothing may follow `done`
            if isinstance(frame, Token):
                progress.tokens += 1
                if first_token_ms is None:
                    first_token_ms = (time.monotonic() - started) * 1000
            elif isinstance(frame, Done | Failed):
                terminal = frame
    tokens = progress.tokens
    if isinstance(terminal, Failed):
        return False, f"the stream ended with error {terminal.code}, {request}"
    if terminal is None:
        return False, f"the stream ended without a done frame ({tokens} tokens), {request}"
    if first_token_ms is None:
        return False, f"the stream sent done without a token, {request}"
    return True, (f"/chat/stream sent {tokens} tokens and done, first token "
                  f"after {first_token_ms:.0f} ms")


def _error_code(response: httpx2.Response) -> str:
    try:
        code = envelope_code(response.content)
    except MalformedResponse:
        code = None
    return code or "no error envelope"


def _reasons(response: httpx2.Response) -> str:
    try:
        reasons = response.json().get("reasons")
    except (ValueError, AttributeError):
        reasons = None
    return "; ".join(map(str, reasons)) if isinstance(reasons, list) else "no reasons given"
