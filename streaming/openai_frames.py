"""The pipeline's frames in OpenAI's Chat Completions shapes: chunks, the whole answer, errors.

The streamed chunks are those OpenAI sends (`chat.completion.chunk`, a role chunk first, a
finish chunk, the usage chunk when asked for, `data: [DONE]`); an answer that fails after it
began ends with `data: {"error": ...}` and no `[DONE]`, which the official SDKs raise on, so
no client takes a partial answer for a whole one.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.types import Usage
from streaming.frames import SSE_HEARTBEAT, DoneFrame, ErrorFrame, Frame, MetaFrame, TokenFrame

DONE = b"data: [DONE]\n\n"

# OpenAI's error `type` for each HTTP status the endpoint answers with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "server_error")


def error_object(status: int, code: str, message: str, request_id: str,
                 fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `error` object; `param` names the offending parameter, when there is one.
    Our own fields (request id, incident id, retryable, ...) ride along: SDKs keep them."""
    extra = {key: value for key, value in fields.items() if key != "param"}
    return {"message": message, "type": error_type(status), "param": fields.get("param"),
            "code": code, "request_id": request_id, **extra}


def usage_object(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens}


def completion(completion_id: str, created: int, model: str, text: str,
               finish_reason: str, usage: Usage) -> dict[str, Any]:
    """A whole answer: the `chat.completion` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": None}}],
        "usage": usage_object(usage),
    }


class ChunkEncoder:
    """One answer's frames as `chat.completion.chunk` SSE events.

    A token costs one orjson call on its text between two byte strings made once per answer,
    which is less than the `/chat/stream` frame (a dict, its JSON and an id line per token).
    """

    __slots__ = ("_created", "_head", "_id", "_include_usage", "_model", "_tail")

    def __init__(self, completion_id: str, created: int, model: str,
                 include_usage: bool) -> None:
        self._id, self._created, self._model = completion_id, created, model
        self._include_usage = include_usage
        self._head = self._tail = b""
        self._start(model)

    def _start(self, model: str) -> None:
        self._model = model
        envelope = orjson.dumps({"id": self._id, "object": "chat.completion.chunk",
                                 "created": self._created, "model": model})
        self._head = b"data: " + envelope[:-1] + b',"choices":[{"index":0,"delta":{"content":'
        self._tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: %b\n\n" % orjson.dumps({
            "id": self._id, "object": "chat.completion.chunk", "created": self._created,
            "model": self._model, "choices": choices, **extra})

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, TokenFrame):
            return self._head + orjson.dumps(frame.token) + self._tail
        if isinstance(frame, MetaFrame):  # the route is known: chunks name it as their model
            self._start(frame.model_route)
            return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": None, "finish_reason": None}])
        if isinstance(frame, DoneFrame):
            end = self._chunk([{"index": 0, "delta": {}, "logprobs": None,
                                "finish_reason": frame.finish_reason}])
            if self._include_usage:
                end += self._chunk([], usage=usage_object(frame.usage))
            return end + DONE
        if isinstance(frame, ErrorFrame):
            return b"data: %b\n\n" % orjson.dumps({"error": stream_error(frame)})
        return SSE_HEARTBEAT


def stream_error(frame: ErrorFrame) -> dict[str, Any]:
    """The error that ends an answer already under way: a server error, whatever its cause."""
    fields: dict[str, Any] = {"incident_id": frame.incident_id,
                              "tokens_emitted": frame.tokens_emitted,
                              "retryable": frame.retryable}
    if frame.retry_after is not None:
        fields["retry_after"] = frame.retry_after
    return error_object(500, frame.code, frame.message, frame.request_id, fields)
