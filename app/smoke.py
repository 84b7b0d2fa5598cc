"""`hello-ship smoke URL`: the post-deploy check that a running service really answers.

Three steps, each printed with its timing, all within one overall timeout: `/ready` is 200,
`/chat` gives a non-empty answer, and `/chat/stream` sends a token and then `done`. The first
failure stops the run with a line saying what was wrong (and the request id to look up).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

import httpx2
import orjson

SMOKE_MESSAGE = "Smoke test: reply with a short greeting."

Check = Callable[[httpx2.Client, float], tuple[bool, str]]


def run_smoke(url: str, *, key: str | None, timeout_s: float, out: TextIO,
              message: str = SMOKE_MESSAGE) -> bool:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    started = time.monotonic()
    deadline = started + timeout_s
    steps: list[tuple[str, Check]] = [
        ("ready", _ready),
        ("chat", lambda client, remaining: _chat(client, remaining, message)),
        ("stream", lambda client, remaining: _stream(client, remaining, message)),
    ]
    with httpx2.Client(base_url=url.rstrip("/"), headers=headers) as client:
        for name, check in steps:
            remaining = deadline - time.monotonic()
            step_started = time.monotonic()
            if remaining <= 0:
                ok, detail = False, f"no time left of the {timeout_s:g} s timeout"
            else:
                try:
                    ok, detail = check(client, remaining)
                except httpx2.TimeoutException:
                    ok, detail = False, f"no answer within the {timeout_s:g} s timeout"
                except httpx2.HTTPError as exc:
                    ok, detail = False, f"cannot reach {url}: {type(exc).__name__}"
            elapsed_ms = (time.monotonic() - step_started) * 1000
            out.write(f"{'ok  ' if ok else 'FAIL'}  {name:<7} {detail} ({elapsed_ms:.0f} ms)\n")
            if not ok:
                return False
    out.write(f"smoke passed in {(time.monotonic() - started) * 1000:.0f} ms\n")
    return True


def _ready(client: httpx2.Client, remaining: float) -> tuple[bool, str]:
    response = client.get("/ready", timeout=remaining)
    if response.status_code != 200:
        return False, f"/ready is {response.status_code}: {_reasons(response)}"
    return True, "/ready is 200"


def _chat(client: httpx2.Client, remaining: float, message: str) -> tuple[bool, str]:
    response = client.post("/chat", json={"message": message}, timeout=remaining)
    request_id = response.headers.get("x-request-id", "?")
    if response.status_code != 200:
        return False, (f"/chat is {response.status_code} ({_error_code(response)}), "
                       f"request {request_id}")
    answer = _json(response).get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return False, f"/chat gave an empty answer, request {request_id}"
    route = _json(response).get("model_route", "?")
    return True, f"/chat answered {len(answer)} characters from {route}"


def _stream(client: httpx2.Client, remaining: float, message: str) -> tuple[bool, str]:
    deadline = time.monotonic() + remaining
    try:
        return _read_stream(client, remaining, message, deadline)
    except httpx2.TimeoutException:
        return False, f"no done frame within the time left ({remaining:.1f} s)"


def _read_stream(client: httpx2.Client, remaining: float, message: str,
                 deadline: float) -> tuple[bool, str]:
    started = time.monotonic()
    first_token_ms: float | None = None
    tokens = 0
    with client.stream("POST", "/chat/stream", json={"message": message},
                       timeout=remaining) as response:
        request_id = response.headers.get("x-request-id", "?")
        if response.status_code != 200:
            response.read()
            return False, (f"/chat/stream is {response.status_code} "
                           f"({_error_code(response)}), request {request_id}")
        event = ""
        for line in response.iter_lines():
            if time.monotonic() > deadline:  # heartbeats alone would never time out a read
                return False, f"no done frame in time ({tokens} tokens), request {request_id}"
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "token":
                tokens += 1
                if first_token_ms is None:
                    first_token_ms = (time.monotonic() - started) * 1000
            elif line.startswith("data: ") and event == "error":
                code = orjson.loads(line.removeprefix("data: ")).get("code", "?")
                return False, f"the stream ended with error {code}, request {request_id}"
            elif line.startswith("data: ") and event == "done":
                if not tokens:
                    return False, f"the stream sent done without a token, request {request_id}"
                return True, (f"/chat/stream sent {tokens} tokens and done, first token "
                              f"after {first_token_ms:.0f} ms")
    return False, f"the stream ended without a done frame ({tokens} tokens), request {request_id}"


def _json(response: httpx2.Response) -> dict[str, object]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(response: httpx2.Response) -> str:
    error = _json(response).get("error")
    return str(error.get("code", "?")) if isinstance(error, dict) else "no error envelope"


def _reasons(response: httpx2.Response) -> str:
    reasons = _json(response).get("reasons")
    return "; ".join(map(str, reasons)) if isinstance(reasons, list) else "no reasons given"
