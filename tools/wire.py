"""Reading the service's answers as a client, for `hello-ship eval` and `hello-ship smoke`:
SSE frames, `/chat` bodies and error envelopes, each checked against the HTTP contract.

Both commands read the wire through this one module, so they agree on what a well-formed
answer is. SSE itself is parsed by httpx2's `EventSource` (the httpx-sse parser: `data:x` and
`data: x` alike, CR/LF line ends, comments skipped). Anything the contract does not allow (a
frame that is not a JSON object, a field of the wrong type, a frame type it does not name, an
error frame without a code, a frame after the terminal one) raises `MalformedResponse`, which
fails one answer, never the command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import httpx2
import orjson


def service_client(url: str, key: str | None, timeout_s: float) -> httpx2.AsyncClient:
    """A client of the service at `url` (its base URL), sending `key`, if any, as a bearer
    token; `timeout_s` bounds each read, not a whole request."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)


class MalformedResponse(Exception):
    """The service answered something the HTTP contract does not allow; the message says what."""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Meta:
    model_route: str | None


@dataclass(frozen=True, slots=True)
class Done:
    usage: Usage
    model_route: str | None


@dataclass(frozen=True, slots=True)
class Failed:
    code: str


Frame: TypeAlias = Token | Meta | Done | Failed


@dataclass(frozen=True, slots=True)
class ChatBody:
    answer: str
    model_route: str | None
    usage: Usage


async def read_frames(response: httpx2.Response) -> AsyncIterator[Frame]:
    """The frames of a `/chat/stream` answer, read to the end of the body, so that a frame
    after `done` or `error` is caught rather than silently dropped or appended."""
    ended: str | None = None
    try:
        async for event in httpx2.EventSource(response):
            if not event.data:  # the opening `retry:` block, an event with no data line
                continue
            frame = _frame(_json_object(event.data, "a frame"), event.event)
            if ended is not None:
                raise MalformedResponse(f"a {_kind(frame)} frame after the {ended} frame")
            if isinstance(frame, Done | Failed):
                ended = _kind(frame)
            yield frame
    except httpx2.SSEError as exc:  # not text/event-stream, or an event over the size cap
        raise MalformedResponse(str(exc)) from None


def chat_body(content: bytes) -> ChatBody:
    """A `/chat` answer: {"answer": str, "model_route": str, "usage": {...}}."""
    body = _json_object(content, "the /chat body")
    answer = body.get("answer")
    if not isinstance(answer, str):
        raise MalformedResponse(f"the /chat body's answer is {_kind_of(answer)}, not text")
    if "usage" not in body:
        raise MalformedResponse("the /chat body has no usage")
    return ChatBody(answer, _route(body, "the /chat body"), _usage(body["usage"]))


def envelope_code(content: bytes) -> str | None:
    """`error.code` of an error response; None when the body is no envelope at all (a proxy's
    HTML page), which the HTTP status then speaks for."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or "code" not in error:
        return None
    code = error["code"]
    if not isinstance(code, str) or not code:
        raise MalformedResponse(f"the error envelope's code is {_kind_of(code)}, not text")
    return code


def _frame(data: Mapping[str, Any], event: str) -> Frame:
    kind = data.get("type")
    # The event name is optional on the wire ("message" when absent); when given, it must
    # agree with the frame's own type.
    if event not in ("message", kind):
        raise MalformedResponse(f"an {event!r} event holding a {_kind_of(kind)} frame")
    if kind == "token":
        text = data.get("token")
        if not isinstance(text, str):
            raise MalformedResponse(f"a token frame whose token is {_kind_of(text)}")
        return Token(text)
    if kind == "meta":
        return Meta(_route(data, "a meta frame"))
    if kind == "done":
        return Done(_usage(data.get("usage")), _route(data, "a done frame"))
    if kind == "error":
        code = data.get("code")
        if not isinstance(code, str) or not code:
            raise MalformedResponse(f"an error frame whose code is {_kind_of(code)}")
        return Failed(code)
    raise MalformedResponse(f"a frame of unknown type {_kind_of(kind)}")


def _json_object(content: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise MalformedResponse(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedResponse(f"{what} is {_kind_of(value)}, not a JSON object")
    return value


def _route(data: Mapping[str, Any], where: str) -> str | None:
    route = data.get("model_route")
    if route is not None and (not isinstance(route, str) or not route):
        raise MalformedResponse(f"{where} names its model_route as {_kind_of(route)}")
    return route


def _usage(value: object) -> Usage:
    if value is None:
        return Usage()
    if not isinstance(value, dict):
        raise MalformedResponse(f"usage is {_kind_of(value)}, not an object")
    counts = [value.get(name) for name in ("input_tokens", "output_tokens")]
    for name, count in zip(("input_tokens", "output_tokens"), counts, strict=True):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            raise MalformedResponse(f"usage.{name} is {_kind_of(count)}, not a token count")
    return Usage(counts[0], counts[1])


def _kind(frame: Frame) -> str:
    return {Token: "token", Meta: "meta", Done: "done", Failed: "error"}[type(frame)]


def _kind_of(value: object) -> str:
    """A value as a message names it, without quoting more than a little of it."""
    if value is None:
        return "missing"
    if isinstance(value, str):
        return repr(value[:40]) if value else "empty"
    if isinstance(value, bool | int | float):
        return f"the {type(value).__name__} {value!r}"
    return "an object" if isinstance(value, dict) else "a list"
