"""A fake Bedrock runtime: `ConverseStream` answered in AWS event-stream binary frames.

Routes: `POST /model/{modelId}/converse-stream`, and `POST /model/{modelId}/invoke` for the
Titan text embedding models (`amazon.titan-embed-text-v2:0`, `amazon.titan-embed-text-v1`),
which answer `fake_embedding` of `inputText`: v2 `dimensions` long (256, 512 or 1024; 1024 when
left out), normalized unless `normalize` is false, and taking `embeddingTypes` too (though
answering floats only); v1 1536 long, unnormalized, and taking no field but `inputText`.
Their faults are the `embedding_*` fields of `Upstream`. The SigV4 signature is not verified
(the secret never travels); the access key id in the `Authorization` credential scope is
checked.
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

from tests.upstreams.common import (
    Quota,
    Script,
    Upstream,
    answer,
    embedding_refusal,
    fake_embedding,
    fake_token_count,
    receive,
    serve,
    turn_order_problem,
)
from tests.upstreams.eventstream import encode_message, event, exception

REQUEST_ID = "7f0c6b3e-0000-4000-8000-00000000fake"
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "A conversation must start with a user message."),
    403: ("UnrecognizedClientException", "The security token included in the request is "
          "invalid. Credential={key}"),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model from the "
          "provided model identifier."),
    424: ("ModelErrorException", "The model returned an error."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again. "
          "Key {key}."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "The service is temporarily unavailable."),
}


TITAN_V2 = "amazon.titan-embed-text-v2:0"
TITAN_V2_DIMENSIONS = (256, 512, 1024)
TITAN_V1_DIMENSIONS = 1536
_TITAN_V2_FIELDS = frozenset({"inputText", "dimensions", "normalize", "embeddingTypes"})


def event_frame(event_type: str, payload: Any) -> bytes:
    """One event message holding `payload` as it is, for a test's own (wrongly shaped) event."""
    return event(event_type, orjson.dumps(payload))


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
        # Like Anthropic, cached input is counted apart from `inputTokens`.
        usage = {"inputTokens": script.input_tokens - script.cache_read_tokens,
                 "outputTokens": script.output_tokens,
                 "totalTokens": script.input_tokens + script.output_tokens,
                 "cacheReadInputTokens": script.cache_read_tokens,
                 "cacheWriteInputTokens": 0}
        return [
            event("contentBlockStop", _padded({"contentBlockIndex": 0})),
            event("messageStop", _padded({"stopReason": script.finish or "end_turn"})),
            event("metadata", _padded({"usage": usage, "metrics": {"latencyMs": 412}})),
        ]

    def quota_headers(self, quota: Quota) -> dict[str, str]:
        return {}  # Bedrock reports no rate limits in its headers

    def malformed(self) -> bytes:
        frame = bytearray(self.token("corrupted"))
        frame[-1] ^= 0xFF  # the message CRC no longer matches
        return bytes(frame)

    def stream_error(self, error_type: str | None) -> bytes:
        return exception(error_type or "modelStreamErrorException", orjson.dumps(
            {"message": "The model stream was interrupted.", "originalStatusCode": 500}))

    def error(self, status: int, script: Script, presented_key: str) -> Response:
        code, message = _ERRORS.get(status, _ERRORS[500])
        return _error_response(status, script.error_code or code,
                               message.format(key=presented_key))


def _error_response(status: int, code: str, message: str) -> Response:
    # Bedrock sends no Retry-After, even with a ThrottlingException.
    headers = {"x-amzn-requestid": REQUEST_ID,
               "x-amzn-errortype": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def conversation_error(body: dict[str, Any]) -> str | None:
    """What Converse refuses about the turns themselves."""
    problem = turn_order_problem(body)
    if problem == "first":
        return ("A conversation must start with a user message. Try again with a "
                "conversation that starts with a user message.")
    if problem == "repeat":
        return "A conversation must alternate between user and assistant roles."
    return None


def _malformed_input(problem: str) -> Response:
    return _error_response(400, "ValidationException", f"Malformed input request: {problem}, "
                           "please reformat your input and try again.")


def titan_answer(model_id: str, body: Any) -> Response:
    """Titan's answer to an `InvokeModel` body, or its refusal of the body."""
    if not model_id.startswith("amazon.titan-embed-text-"):
        return _error_response(400, "ValidationException",
                               "The provided model identifier is invalid.")
    v2 = not model_id.startswith("amazon.titan-embed-text-v1")
    if not isinstance(body, dict):
        return _malformed_input("#: expected type: JSONObject")
    extra = sorted(set(body) - (_TITAN_V2_FIELDS if v2 else {"inputText"}))
    if extra:
        return _malformed_input(f"#: extraneous key [{extra[0]}] is not permitted")
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        return _malformed_input("#/inputText: expected minLength: 1")
    dimensions = body.get("dimensions", 1024) if v2 else TITAN_V1_DIMENSIONS
    if v2 and (type(dimensions) is not int or dimensions not in TITAN_V2_DIMENSIONS):
        return _malformed_input(f"#/dimensions: {dimensions} is not a valid enum value")
    normalize = body.get("normalize", True) if v2 else False
    if not isinstance(normalize, bool):
        return _malformed_input("#/normalize: expected type: Boolean")
    vector = fake_embedding(text, dimensions, normalize=normalize)
    tokens = fake_token_count(text)
    answer: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": tokens}
    if v2:
        answer["embeddingsByType"] = {"float": vector}
    return JSONResponse(answer, headers={"x-amzn-requestid": REQUEST_ID,
                                         "x-amzn-bedrock-input-token-count": str(tokens),
                                         "x-amzn-bedrock-invocation-latency": "41"})


def _access_key_id(request: Request) -> str:
    """`AWS4-HMAC-SHA256 Credential=AKID/date/region/bedrock/aws4_request, ...` -> AKID."""
    authorization = request.headers.get("authorization", "")
    _, _, rest = authorization.partition("Credential=")
    return rest.split("/", 1)[0]


def bedrock_app(upstream: Upstream) -> Starlette:
    async def converse_stream(request: Request) -> Response:
        received = await receive(upstream, request)
        problem = conversation_error(received.json or {})
        if problem is not None:
            return _error_response(400, "ValidationException", problem)
        return await answer(upstream, BedrockWire(), request, request.path_params["model_id"],
                            _access_key_id(request), headers={"x-amzn-requestid": REQUEST_ID})

    async def invoke(request: Request) -> Response:
        received = await receive(upstream, request)
        refused = await embedding_refusal(upstream, BedrockWire(), request,
                                          _access_key_id(request))
        if refused is not None:
            return refused
        return titan_answer(request.path_params["model_id"], received.json)

    return Starlette(routes=[
        Route("/model/{model_id:path}/converse-stream", converse_stream, methods=["POST"]),
        Route("/model/{model_id:path}/invoke", invoke, methods=["POST"]),
    ])


@contextmanager
def bedrock_upstream(access_key_id: str = "AKIAFAKETEST00000001") -> Iterator[Upstream]:
    upstream = Upstream(api_key=access_key_id)
    with serve(bedrock_app(upstream), upstream) as live:
        yield live


__all__ = ["bedrock_upstream", "encode_message"]
