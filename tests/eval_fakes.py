"""A fake of the hello-ship HTTP surface for `hello-ship eval` and `smoke` tests: a real server
(run it with tests.servers.thread_server) that answers each request as its input text says,
so one run can meet a well-formed answer, malformed ones, a rate limit and a slow body."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ROUTE = "fake/one"
ROOT = Path(__file__).resolve().parents[1]


def hello_ship(*args: str, env: Mapping[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The `hello-ship` command as an operator runs it, from the project root."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def sse(payload: object, event: str | None = None) -> bytes:
    """One SSE event; its `event:` line is the payload's type unless given."""
    if event is None and isinstance(payload, dict):
        event = str(payload.get("type"))
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def good_stream(route: str = ROUTE, text: str = "hello") -> list[bytes]:
    return [b"retry: 3000\n\n", sse({"type": "meta", "model_route": route}),
            sse({"type": "token", "token": text}), b": heartbeat\n\n",
            sse({"type": "done", "finish_reason": "stop", "model_route": route,
                 "usage": {"input_tokens": 3, "output_tokens": 1}})]


def good_chat(route: str = ROUTE) -> bytes:
    return orjson.dumps({"answer": "hello", "model_route": route,
                         "usage": {"input_tokens": 3, "output_tokens": 1}})


@dataclass
class FakeService:
    """What the fake answers. Keys of `streams` and `chats` are a request's last message."""

    routes: Sequence[Mapping[str, object]] = ({"route": ROUTE},)
    streams: Mapping[str, Sequence[bytes]] = field(default_factory=dict)
    chats: Mapping[str, bytes] = field(default_factory=dict)
    rate_limited_first: int = 0  # refuse the first N requests of each input with a 429
    retry_after: str = "0.05"  # the Retry-After of those 429s
    refusal: tuple[int, str] | None = None  # (status, code) refusing every chat request
    trickle: frozenset[str] = frozenset()  # paths whose body comes a byte every 0.2 s
    answered_route: str = ROUTE  # the route a well-formed answer names, whatever was pinned
    seen: dict[str, int] = field(default_factory=dict)
    pinned: list[str | None] = field(default_factory=list)  # X-Route of each chat request
    keys: list[str | None] = field(default_factory=list)  # Authorization of each request

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/ready", self._ready),
                                 Route("/chat", self._chat, methods=["POST"]),
                                 Route("/chat/stream", self._stream, methods=["POST"])])

    async def _ready(self, request: Request) -> Response:
        self.keys.append(request.headers.get("authorization"))
        body = orjson.dumps({"status": "ready", "routes": list(self.routes)})
        return self._body("/ready", body, "application/json")

    async def _chat(self, request: Request) -> Response:
        text = await self._text(request)
        if self.refusal is not None:
            return self._refused(*self.refusal)
        body = self.chats.get(text, good_chat(self.answered_route))
        return self._body("/chat", body, "application/json")

    async def _stream(self, request: Request) -> Response:
        text = await self._text(request)
        if self.refusal is not None:
            return self._refused(*self.refusal)
        if self.seen[text] <= self.rate_limited_first:
            return self._refused(429, "rate_limited", {"Retry-After": self.retry_after})
        chunks = self.streams.get(text, good_stream(self.answered_route))

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"X-Request-ID": f"req_fake_{text[:20]}"})

    async def _text(self, request: Request) -> str:
        self.keys.append(request.headers.get("authorization"))
        self.pinned.append(request.headers.get("x-route"))
        payload = await request.json()
        text = payload.get("message") or payload["messages"][-1]["content"]
        self.seen[text] = self.seen.get(text, 0) + 1
        return str(text)

    @staticmethod
    def _refused(status: int, code: str, headers: Mapping[str, str] | None = None) -> Response:
        return JSONResponse({"error": {"code": code, "message": "Refused."}},
                            status_code=status, headers=headers)

    def _body(self, path: str, body: bytes, media_type: str) -> Response:
        if path not in self.trickle:
            return Response(body, media_type=media_type, headers={"X-Request-ID": "req_fake"})

        async def slowly() -> AsyncIterator[bytes]:
            for _ in itertools.repeat(None, 300):  # a minute of spaces, each renewing a read
                yield b" "
                await anyio.sleep(0.2)
            yield body

        return StreamingResponse(slowly(), media_type=media_type,
                                 headers={"X-Request-ID": "req_fake"})
