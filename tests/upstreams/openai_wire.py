"""A fake OpenAI (or OpenAI-compatible) server: `chat.completion.chunk` SSE, `[DONE]`, usage.

Routes: `POST /v1/chat/completions` (streamed), `POST /v1/moderations`, `POST /v1/embeddings`
and `GET /v1/models`; bearer-key checked.

Embeddings are `fake_embedding` of each input text, `DEFAULT_EMBEDDING_DIMENSIONS` long unless
the request asks for `dimensions`, as floats or (`encoding_format: base64`, the SDK's default)
as little-endian float32 in base64. Their faults are the `embedding_*` fields of `Upstream`.
"""

from __future__ import annotations

import base64
import struct
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
    refusal,
    serve,
)

CREATED = 1_732_752_000
DEFAULT_EMBEDDING_DIMENSIONS = 256
# A text holding this is flagged for violence; holding `FLAG-ME:harassment`, harassment too.
MODERATION_FLAG = "FLAG-ME"
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid value for 'messages'."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not "
          "have access to it."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}. "
          "You can find your API key at https://platform.openai.com/account/api-keys."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini on requests "
          "per min (RPM): Limit 3, Used 3, Requested 1. Key {key}."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def _go_duration(seconds: float) -> str:
    """As OpenAI writes its reset times: `20ms`, `1s`, `6m0s`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk_frame(payload: Any) -> bytes:
    """One `data:` frame holding `payload` as it is, for a test's own (wrongly shaped) chunk."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class OpenAIWire:
    media_type = "text/event-stream"
    auth_status = 401

    def __init__(self) -> None:
        self._model = ""
        self._include_usage = False

    def configure(self, model: str, include_usage: bool) -> None:
        self._model, self._include_usage = model, include_usage

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-AZfake0001", "object": "chat.completion.chunk", "created": CREATED,
            "model": self._model, "service_tier": "default", "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return _data(chunk)

    def opening(self, script: Script, model: str) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": "", "refusal": None})]

    def token(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def closing(self, script: Script) -> list[bytes]:
        frames = [self._chunk({}, script.finish or "stop")]
        if self._include_usage:
            frames.append(_data({
                "id": "chatcmpl-AZfake0001", "object": "chat.completion.chunk",
                "created": CREATED, "model": self._model, "service_tier": "default",
                "system_fingerprint": "fp_0ba0d124f1", "choices": [],
                "usage": {
                    "prompt_tokens": script.input_tokens,  # cached tokens included
                    "completion_tokens": script.output_tokens,
                    "total_tokens": script.input_tokens + script.output_tokens,
                    "prompt_tokens_details": {"cached_tokens": script.cache_read_tokens,
                                              "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                  "accepted_prediction_tokens": 0,
                                                  "rejected_prediction_tokens": 0},
                },
            }))
        frames.append(b"data: [DONE]\n\n")
        return frames

    def quota_headers(self, quota: Quota) -> dict[str, str]:
        reset = _go_duration(quota.reset_s)
        return {"x-ratelimit-limit-requests": str(quota.requests_limit),
                "x-ratelimit-remaining-requests": str(quota.requests_remaining),
                "x-ratelimit-reset-requests": reset,
                "x-ratelimit-limit-tokens": str(quota.tokens_limit),
                "x-ratelimit-remaining-tokens": str(quota.tokens_remaining),
                "x-ratelimit-reset-tokens": reset}

    def malformed(self) -> bytes:
        return b'data: {"id":"chatcmpl-AZfake0001","object":"chat.completion.chunk","choi\n\n'

    def stream_error(self, error_type: str | None) -> bytes:
        return _data({"error": {"message": "The server had an error while processing your "
                                           "request.", "type": error_type or "server_error",
                                "param": None, "code": None}})

    def error(self, status: int, script: Script, presented_key: str) -> Response:
        kind, code, message = _ERRORS.get(status, _ERRORS[500])
        if script.error_code is not None:
            kind = code = script.error_code
        headers = {"x-request-id": "req_fake0001"}
        if script.retry_after is not None:
            headers["retry-after"] = script.retry_after
        body = {"error": {"message": message.format(key=presented_key), "type": kind,
                          "param": None, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)


def moderation_result(text: str) -> dict[str, Any]:
    """One entry of `results`, as omni-moderation answers a text input."""
    flagged: set[str] = set()
    if MODERATION_FLAG in text:
        flagged.add("violence")
        if MODERATION_FLAG + ":harassment" in text:
            flagged.add("harassment")
    return {
        "flagged": bool(flagged),
        "categories": {name: name in flagged for name in MODERATION_CATEGORIES},
        "category_scores": {name: 0.9182 if name in flagged else 0.0000118
                            for name in MODERATION_CATEGORIES},
        "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
    }


def _input_texts(body: Any) -> list[str] | None:
    """`input` as a list of texts; None when it is neither a text nor a list of texts."""
    value = body.get("input") if isinstance(body, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(text, str) for text in value):
        return value
    return None


def _invalid_request(message: str, param: str) -> Response:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": param, "code": None}},
                        status_code=400, headers={"x-request-id": "req_fake0001"})


def _embedding_request_problem(body: Any) -> Response | None:
    """What OpenAI refuses about an embedding request's fields, in its error shape."""
    texts = _input_texts(body)
    if texts is None or "" in texts:
        return _invalid_request("'$.input' is invalid. Please check the API reference: "
                                "https://platform.openai.com/docs/api-reference.", "input")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        return _invalid_request(f"Invalid value for 'dimensions' = {dimensions}. Must be "
                                "greater than 0.", "dimensions")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return _invalid_request("Invalid value for 'encoding_format': expected 'float' or "
                                "'base64'.", "encoding_format")
    return None


def embedding_answer(body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a well-formed `POST /v1/embeddings` body."""
    texts = _input_texts(body) or []
    dimensions = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    data = []
    for index, text in enumerate(texts):
        vector: Any = fake_embedding(text, dimensions)
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(fake_token_count(text) for text in texts)
    return {"object": "list", "data": data, "model": str(body.get("model", "")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _presented_key(request: Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


def openai_app(upstream: Upstream) -> Starlette:
    async def completions(request: Request) -> Response:
        received = await receive(upstream, request)
        body = received.json or {}
        wire = OpenAIWire()
        wire.configure(str(body.get("model", "")),
                       bool((body.get("stream_options") or {}).get("include_usage")))
        return await answer(upstream, wire, request, wire._model, _presented_key(request),
                            headers={"x-request-id": "req_fake0001"})

    async def models(request: Request) -> Response:
        await receive(upstream, request)
        refused = await refusal(upstream, OpenAIWire(), request, _presented_key(request))
        if refused is not None:
            return refused
        return JSONResponse({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": CREATED, "owned_by": "system"}]})

    async def moderations(request: Request) -> Response:
        """Faults from the next queued script, like a completion: a gateway moderates each
        request right before it asks for the completion."""
        received = await receive(upstream, request)
        refused = await refusal(upstream, OpenAIWire(), request, _presented_key(request),
                                upstream.take_script())
        if refused is not None:
            return refused
        texts = _input_texts(received.json)
        if texts is None:
            return JSONResponse({"error": {
                "message": "Invalid value for 'input': expected a string or an array of "
                           "strings.", "type": "invalid_request_error", "param": "input",
                "code": None}}, status_code=400, headers={"x-request-id": "req_fake0001"})
        model = str(received.json.get("model") or "omni-moderation-latest")
        return JSONResponse({"id": "modr-fake0001", "model": model,
                             "results": [moderation_result(text) for text in texts]},
                            headers={"x-request-id": "req_fake0001"})

    async def embeddings(request: Request) -> Response:
        received = await receive(upstream, request)
        refused = await embedding_refusal(upstream, OpenAIWire(), request,
                                          _presented_key(request))
        if refused is not None:
            return refused
        problem = _embedding_request_problem(received.json)
        if problem is not None:
            return problem
        return JSONResponse(embedding_answer(received.json),
                            headers={"x-request-id": "req_fake0001"})

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/moderations", moderations, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ])


@contextmanager
def openai_upstream(api_key: str = "sk-test-openai-0123456789abcdef") -> Iterator[Upstream]:
    upstream = Upstream(api_key=api_key)
    with serve(openai_app(upstream), upstream) as live:
        yield live
