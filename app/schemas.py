"""Validating a chat request body into the vendor-neutral messages the pipeline takes.

The tenant is never read from the body. Unknown fields are refused rather than ignored, so a
typo such as `max_token` fails loudly instead of silently running with the default. The
caller's own `system` messages are sent on, dropped here, or refused, as the tenant's policy
says (`system_messages`, by default CALLER_SYSTEM_MESSAGES).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.errors import ApiError
from providers.types import DEFAULT_SAMPLING, Message, Role, Sampling
from tenancy.identity import SystemMessages

ROLES: tuple[Role, ...] = ("user", "assistant", "system")
SAMPLING_FIELDS = frozenset({"temperature", "top_p", "stop", "seed"})
_FIELDS = frozenset({"message", "messages", "max_tokens", "feature"}) | SAMPLING_FIELDS
MAX_STOP_SEQUENCES = 4
_SEED_RANGE = 2**63
_FEATURE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_input_chars: int
    max_messages: int
    max_output_tokens: int
    # The caller's own `system` messages (the tenant's `system_messages`, by default
    # CALLER_SYSTEM_MESSAGES): "allow" them, "drop" them here, or "refuse" the request.
    system_messages: SystemMessages = "allow"


@dataclass(frozen=True, slots=True)
class ChatInput:
    messages: tuple[Message, ...]  # without the `system` ones the tenant's policy dropped
    max_tokens: int  # already clamped to the server's limit
    feature: str
    dropped_system_messages: int = 0  # counted for the log, never kept
    sampling: Sampling = DEFAULT_SAMPLING
    redacted: bool = False  # the input guard redacted some of it: its answer is not cached

    @property
    def input_chars(self) -> int:
        return sum(len(m.content) for m in self.messages)


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def _content(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{where} must be a string.")
    if not value.strip():
        raise _invalid(f"{where} must not be empty.")
    return value


def _messages(payload: dict[str, Any], limits: InputLimits) -> tuple[tuple[Message, ...], int]:
    """The messages to send on, and how many `system` ones the caller's policy dropped."""
    has_one, has_many = "message" in payload, "messages" in payload
    if has_one == has_many:
        raise _invalid("Send exactly one of 'message' (a string) or 'messages' (a list).")
    if has_one:
        return (Message("user", _content(payload["message"], "'message'")),), 0
    return check_messages(payload["messages"], limits)


def check_messages(raw: Any, limits: InputLimits) -> tuple[tuple[Message, ...], int]:
    """A list of `{"role", "content"}` objects with string content, as the pipeline takes it;
    and how many `system` ones the policy dropped."""
    if not isinstance(raw, list) or not raw:
        raise _invalid("'messages' must be a non-empty list.")
    if len(raw) > limits.max_messages:
        raise ApiError(413, "input_too_large",
                       f"At most {limits.max_messages} messages are accepted.")
    messages = []
    dropped = 0
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object with 'role' and 'content'.")
        if set(item) - {"role", "content"}:
            raise _invalid(f"{where} accepts only the fields 'role' and 'content'.")
        role = item.get("role")
        if role not in ROLES:
            raise _invalid(f"{where}.role must be one of: {', '.join(ROLES)}.")
        message = Message(role, _content(item.get("content"), f"{where}.content"))
        if role == "system" and limits.system_messages == "refuse":
            raise ApiError(422, "system_messages_refused",
                           f"{where} has role 'system', which this service does not accept "
                           f"from callers; send only 'user' and 'assistant' messages.")
        if role == "system" and limits.system_messages == "drop":
            dropped += 1  # gone before the guard, the limits or any vendor sees it
            continue
        messages.append(message)
    if not any(m.role == "user" for m in messages):
        raise _invalid("'messages' must contain at least one message with role 'user'.")
    return tuple(messages), dropped


def _number(payload: dict[str, Any], name: str, most: float) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= most:
        raise _invalid(f"'{name}' must be a number from 0 to {most:g}.")
    return float(value)


def parse_sampling(payload: dict[str, Any], user: str | None = None) -> Sampling:
    """`temperature`, `top_p`, `stop` and `seed` as OpenAI takes them; null is the default."""
    stop = payload.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is None:
        stop = []
    if (not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES
            or not all(isinstance(item, str) and 0 < len(item) <= 100 for item in stop)):
        raise _invalid(f"'stop' must be a string or a list of at most {MAX_STOP_SEQUENCES} "
                       f"strings of 1-100 characters.")
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not -_SEED_RANGE <= seed < _SEED_RANGE):
        raise _invalid("'seed' must be a 64-bit integer.")
    sampling = Sampling(temperature=_number(payload, "temperature", 2.0),
                        top_p=_number(payload, "top_p", 1.0), stop=tuple(stop), seed=seed,
                        user=user)
    return DEFAULT_SAMPLING if sampling == DEFAULT_SAMPLING else sampling


def check_input_size(messages: tuple[Message, ...], limits: InputLimits) -> None:
    if sum(len(m.content) for m in messages) > limits.max_input_chars:
        raise ApiError(413, "input_too_large",
                       f"The input is longer than {limits.max_input_chars} characters.")


def max_tokens(value: Any, limits: InputLimits, name: str = "max_tokens") -> int:
    """The caller's output cap, clamped to the server's; its absence is the server's."""
    if value is None:
        return limits.max_output_tokens
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"'{name}' must be an integer.")
    if value < 1:
        raise _invalid(f"'{name}' must be at least 1.")
    return min(value, limits.max_output_tokens)


def parse_chat(payload: dict[str, Any], limits: InputLimits) -> ChatInput:
    unknown = set(payload) - _FIELDS
    if unknown:  # named by count only: a field name is caller input like any other
        raise _invalid(f"{len(unknown)} unknown field(s); the accepted fields are "
                       f"{', '.join(sorted(_FIELDS))}.")
    messages, dropped = _messages(payload, limits)
    check_input_size(messages, limits)
    feature = payload.get("feature", "default")
    if not isinstance(feature, str) or not _FEATURE.fullmatch(feature):
        raise _invalid("'feature' must be 1-64 characters of letters, digits and _ . : -")
    return ChatInput(messages, max_tokens(payload.get("max_tokens"), limits), feature,
                     dropped_system_messages=dropped, sampling=parse_sampling(payload))
