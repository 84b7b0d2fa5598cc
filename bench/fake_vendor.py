"""A fast fake OpenAI-compatible vendor for the gateway benchmark (bench/gateway.py).

It answers `POST /v1/chat/completions` with a streamed `chat.completion.chunk` answer of
`--tokens` tokens, its usage chunk (`include_usage`) and `[DONE]`, and `GET /v1/models` (the
service's readiness check). Every frame is encoded once at start-up, so the cost per token is
one `write`: the vendor must never be what limits a benchmark of what sits in front of it.
A raw asyncio protocol on uvloop, HTTP/1.1 with keep-alive, nothing else.

How it answers is switched for all requests that start from then on, by the benchmark:
`GET /bench/mode/<mode>`, where the mode is

- `paced`: like a model, the first token `--ttft-ms` after the request, then one every
  `--token-ms` (each stream on its own timer);
- `fast`: the whole answer in one write;
- `quiet`: the response head and the role chunk, then nothing until the client goes away
  (streams held open, to measure what an open stream costs in front of it).

`GET /bench/stats` answers `{"answers": ..., "tokens": ...}`: answers begun and token chunks
written so far, so a benchmark divides a process's CPU by the tokens actually relayed.
Run: `python bench/fake_vendor.py --port 8000` (the benchmark starts it itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket

import uvloop

CREATED = 1_732_752_000
MODEL = "bench-model"
# An answer of plain sentences: words the output guard releases as they settle, sentence ends
# now and then, nothing a detector would hold back for (no digits, no @).
TEXT = ("Sure, here is a short answer. The lighthouse stands on the rocks above the bay and "
        "its lamp turns all night long. Ships far out at sea watch for the beam and steer "
        "clear of the reef below. In winter the keeper climbs the stairs before dark, trims "
        "the wick and cleans the glass so the light stays bright until the morning comes. "
        "That is the whole story, told in a few plain words.")
WORDS = TEXT.split()

HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"transfer-encoding: chunked\r\nx-request-id: req_bench\r\n\r\n")
MODELS = json.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}]}).encode()


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def sse(payload: object) -> bytes:
    return chunked(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    return sse({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
                "model": MODEL, "system_fingerprint": "fp_bench",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}],
                "usage": None})


def frames(tokens: int) -> tuple[bytes, list[bytes], bytes]:
    """The opening (head and role chunk), one frame per token, and the closing frames."""
    opening = HEAD + chunk({"role": "assistant", "content": "", "refusal": None})
    texts = [(" " if index else "") + WORDS[index % len(WORDS)] for index in range(tokens)]
    usage = {"prompt_tokens": 24, "completion_tokens": tokens, "total_tokens": 24 + tokens}
    closing = (chunk({}, "stop")
               + sse({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                      "created": CREATED, "model": MODEL, "system_fingerprint": "fp_bench",
                      "choices": [], "usage": usage})
               + chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return opening, [chunk({"content": text}) for text in texts], closing


def plain(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (status, len(body), body))


class Vendor:
    def __init__(self, tokens: int, ttft_s: float, token_s: float) -> None:
        self.opening, self.tokens, self.closing = frames(tokens)
        self.whole = self.opening + b"".join(self.tokens) + self.closing
        self.ttft_s, self.token_s = ttft_s, token_s
        self.mode = "paced"
        self.answers = 0
        self.sent = 0  # token chunks written


class Connection(asyncio.Protocol):
    __slots__ = ("_buffer", "_index", "_started", "_timer", "_transport", "_vendor")

    def __init__(self, vendor: Vendor) -> None:
        self._vendor = vendor
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._index = 0
        self._started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                length = int(head[at + 17:].split(b"\r\n", 1)[0])
            elif b"\r\ntransfer-encoding:" in head:  # no client here sends a chunked body
                self._transport.write(plain(b"411 Length Required", b"{}"))
                self._transport.close()
                return
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length:]
            self._answer(head.split(b" ", 2))

    def _answer(self, line: list[bytes]) -> None:
        vendor = self._vendor
        method, path = line[0], line[1] if len(line) > 1 else b""
        if method == b"post" and path.endswith(b"/chat/completions"):
            vendor.answers += 1
            if vendor.mode == "fast":
                vendor.sent += len(vendor.tokens)
                self._transport.write(vendor.whole)
                return
            self._transport.write(vendor.opening)
            if vendor.mode == "paced":
                loop = asyncio.get_running_loop()
                self._index = 0
                self._started = loop.time() + vendor.ttft_s
                self._timer = loop.call_at(self._started, self._next)
        elif method == b"get" and path.endswith(b"/models"):
            self._transport.write(plain(b"200 OK", MODELS))
        elif method == b"get" and path.startswith(b"/bench/mode/"):
            mode = path.rsplit(b"/", 1)[1].decode()
            if mode in ("paced", "fast", "quiet"):
                vendor.mode = mode
                self._transport.write(plain(b"200 OK", b"{}"))
            else:
                self._transport.write(plain(b"404 Not Found", b"{}"))
        elif method == b"get" and path == b"/bench/stats":
            body = json.dumps({"answers": vendor.answers, "tokens": vendor.sent}).encode()
            self._transport.write(plain(b"200 OK", body))
        else:
            self._transport.write(plain(b"404 Not Found", b"{}"))

    def _next(self) -> None:
        vendor, index = self._vendor, self._index
        vendor.sent += 1
        if index + 1 == len(vendor.tokens):
            self._timer = None
            self._transport.write(vendor.tokens[index] + vendor.closing)
            return
        self._transport.write(vendor.tokens[index])
        self._index = index + 1
        self._timer = asyncio.get_running_loop().call_at(
            self._started + (index + 1) * vendor.token_s, self._next)


async def serve(port: int, vendor: Vendor) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(vendor), "127.0.0.1", port,
                                      backlog=4096)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--token-ms", type=float, default=10.0)
    args = parser.parse_args()
    vendor = Vendor(args.tokens, args.ttft_ms / 1000, args.token_ms / 1000)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port, vendor))


if __name__ == "__main__":
    main()
