"""A fake Bedrock runtime: `ConverseStream` answered in AWS event-stream binary frames.

Route: `POST /model/{modelId}/converse-stream`. The SigV4 signature is not verified (the
secret never travels); the access key id in the `Authorization` credential scope is checked.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.upstreams.common import Script, Upstream, answer, receive, serve
from tests.upstreams.eventstream import encode_message, event, exception

REQUEST_ID = "7f0c6b3e-0000-4000-8000-00000000fake"
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "A conversation must start with a user message."),
    403: ("UnrecognizedClientException", "The security token included in the request is "
          "invalid. Credential={key}"),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again. "
          "Key {key}."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "The service is temporarily unavailable."),
}


def _padded(payload: dict[str, Any]) -> bytes:
    # Bedrock pads each event with a random `p` field so sizes do not leak content.
    return orjson.dumps({**payload, "p": secrets.token_hex(4)})


class BedrockWire:
    media_type = "application/vnd.amazon.eventstream"
    auth_status = 403

    def opening(self, script: Script, model: str) -> list[bytes]:
        return [event("messageStart", _padded({"role": "assistant"}))]

    def token(self, text: str) -> bytes:
        return event("contentBlockDelta",
                     _padded({"contentBlockIndex": 0, "delta": {"text": text}}))

    def closing(self, script: Script) -> list[bytes]:
        usage = {"inputTokens": script.input_tokens, "outputTokens": script.output_tokens,
                 "totalTokens": script.input_tokens + script.output_tokens}
        return [
            event("contentBlockStop", _padded({"contentBlockIndex": 0})),
            event("messageStop", _padded({"stopReason": script.finish or "end_turn"})),
            event("metadata", _padded({"usage": usage, "metrics": {"latencyMs": 412}})),
        ]

    def malformed(self) -> bytes:
        frame = bytearray(self.token("corrupted"))
        frame[-1] ^= 0xFF  # the message CRC no longer matches
        return bytes(frame)

    def stream_error(self) -> bytes:
        return exception("modelStreamErrorException", orjson.dumps(
            {"message": "The model stream was interrupted.", "originalStatusCode": 500}))

    def error(self, status: int, script: Script, presented_key: str) -> Response:
        code, message = _ERRORS.get(status, _ERRORS[500])
        headers = {"x-amzn-requestid": REQUEST_ID,
                   "x-amzn-errortype": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
        if script.retry_after is not None:
            headers["retry-after"] = script.retry_after
        return JSONResponse({"message": message.format(key=presented_key)}, status_code=status,
                            headers=headers)


def _access_key_id(request: Request) -> str:
    """`AWS4-HMAC-SHA256 Credential=AKID/date/region/bedrock/aws4_request, ...` -> AKID."""
    authorization = request.headers.get("authorization", "")
    _, _, rest = authorization.partition("Credential=")
    return rest.split("/", 1)[0]


def bedrock_app(upstream: Upstream) -> Starlette:
    async def converse_stream(request: Request) -> Response:
        await receive(upstream, request)
        return await answer(upstream, BedrockWire(), request, request.path_params["model_id"],
                            _access_key_id(request), headers={"x-amzn-requestid": REQUEST_ID})

    return Starlette(routes=[
        Route("/model/{model_id:path}/converse-stream", converse_stream, methods=["POST"]),
    ])


@contextmanager
def bedrock_upstream(access_key_id: str = "AKIAFAKETEST00000001") -> Iterator[Upstream]:
    upstream = Upstream(api_key=access_key_id)
    with serve(bedrock_app(upstream), upstream) as live:
        yield live


__all__ = ["bedrock_upstream", "encode_message"]
