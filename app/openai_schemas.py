"""Validating an OpenAI Chat Completions body into the request `/chat` would have made.

What the service cannot do (`n` > 1, tools, audio, images, logprobs, a response schema, ...)
is refused with a 400 naming the parameter, never dropped: a client that asked for a tool call
must not get prose back as if it had been considered. Such a parameter at its no-op value
(`n: 1`, `tools: []`, `response_format: {"type": "text"}`) is accepted, as SDKs send those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.errors import ApiError
from app.schemas import (
    ChatInput,
    InputLimits,
    check_input_size,
    check_messages,
    max_tokens,
    parse_sampling,
)

# Parameters at the value that asks for nothing the service does not do.
_NO_OP_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none",),
    "function_call": ("none",),
    "parallel_tool_calls": (True, False),  # means nothing without tools
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
    "store": (False,),
    "metadata": ({},),
    "service_tier": ("auto", "default"),
    # Taken only as null, which frameworks send for what they leave unset.
    "audio": (),
    "prediction": (),
    "reasoning_effort": (),
    "verbosity": (),
    "web_search_options": (),
    "prompt_cache_key": (),
}
# Fields of a message an SDK hands back (its answer, `model_dump()`ed), taken when empty.
_EMPTY_MESSAGE_FIELDS = frozenset({"refusal", "tool_calls", "function_call", "audio",
                                   "annotations", "name"})
_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens",
                     "max_completion_tokens", "temperature", "top_p", "stop", "seed", "user",
                     "safety_identifier"}) | _NO_OP_VALUES.keys()
_PARAM_NAME = re.compile(r"[a-z_]{1,40}")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_USER_CHARS = 256


@dataclass(frozen=True, slots=True)
class CompletionsRequest:
    chat: ChatInput
    model: str
    stream: bool
    include_usage: bool  # the last chunk carries the usage (stream_options.include_usage)


def bad(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message, param=param)


def unsupported(param: str, what: str) -> ApiError:
    return bad(f"{what} is not supported by this service.", param, "unsupported_parameter")


def parse_completions(payload: dict[str, Any], limits: InputLimits) -> CompletionsRequest:
    for name, value in payload.items():
        if name not in _FIELDS:
            known = _PARAM_NAME.fullmatch(name) is not None  # else it is not echoed
            raise bad("Unrecognized request argument supplied" + (f": {name}" if known else
                                                                    "."),
                      name if known else None, "unknown_parameter")
        if name in _NO_OP_VALUES and value is not None and not _no_op(name, value):
            allowed = _NO_OP_VALUES[name]
            raise unsupported(name, f"'{name}' other than {allowed[0]!r}" if allowed else
                              f"'{name}'")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' is required: GET /v1/models lists the ones this key may use.",
                  "model")
    stream = payload.get("stream") or False
    if not isinstance(stream, bool):
        raise bad("'stream' must be a boolean.", "stream")
    user = payload.get("safety_identifier")
    if user is None:
        user = payload.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > MAX_USER_CHARS):
        raise bad(f"'user' must be a string of at most {MAX_USER_CHARS} characters.", "user")
    # Checked as /chat checks them; their 422s are 400s on /v1/ (app.errors), as OpenAI's.
    messages, dropped = check_messages(_plain_messages(payload.get("messages")), limits)
    check_input_size(messages, limits)
    cap_name = ("max_completion_tokens" if payload.get("max_completion_tokens") is not None
                else "max_tokens")
    chat = ChatInput(messages, max_tokens(payload.get(cap_name), limits, cap_name),
                     "default", dropped_system_messages=dropped,
                     sampling=parse_sampling(payload, user))
    return CompletionsRequest(chat, model, stream, _include_usage(payload, stream))


def _no_op(name: str, value: Any) -> bool:
    """`value` is one of the parameter's no-op values, of the same type (`n: true` is not
    `n: 1`)."""
    return any(type(value) is type(no_op) and value == no_op for no_op in _NO_OP_VALUES[name])


def _include_usage(payload: dict[str, Any], stream: bool) -> bool:
    options = payload.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise bad("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage",
                                                        "include_obfuscation"}:
        raise bad("'stream_options' takes 'include_usage' only.", "stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise bad("'stream_options.include_usage' must be a boolean.", "stream_options")
    return include


def _plain_messages(raw: Any) -> Any:
    """OpenAI's messages as `{"role", "content"}` with string content, for the checks `/chat`
    makes; what they cannot carry is refused here, naming where it is."""
    if not isinstance(raw, list):
        return raw  # refused by check_messages, with /chat's wording
    plain = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            return raw
        role = item.get("role")
        if role in ("tool", "function"):
            raise unsupported(f"{where}.role", f"A '{role}' message (tool calling)")
        extra = {name for name in set(item) - {"role", "content"}
                 if not (name in _EMPTY_MESSAGE_FIELDS and item[name] in (None, []))}
        if extra:
            name = sorted(extra)[0]
            what = ("Tool calling" if name in ("tool_calls", "function_call") else
                    f"'{name}' on a message" if _PARAM_NAME.fullmatch(name) else
                    "An unknown field on a message")
            raise unsupported(f"{where}.{name}" if _PARAM_NAME.fullmatch(name) else where,
                              what)
        plain.append({"role": _ROLES.get(role, role) if isinstance(role, str) else role,
                      "content": _text(item.get("content"), where)})
    return plain


def _text(content: Any, where: str) -> Any:
    """String content as it is; content parts joined, if all of them are text."""
    if not isinstance(content, list):
        return content
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise unsupported(f"{where}.content[{index}].type",
                              "Only text content parts are supported; this one"
                              if kind is None or not isinstance(kind, str) or not
                              _PARAM_NAME.fullmatch(kind) else f"A '{kind}' content part")
        text = part.get("text")
        if not isinstance(text, str) or set(part) - {"type", "text"}:
            raise bad(f"{where}.content[{index}] must be {{'type': 'text', 'text': string}}.",
                      f"{where}.content")
        texts.append(text)
    return "\n".join(texts) if texts else ""

