"""The vendor-neutral vocabulary every adapter speaks: what goes in, what comes out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter", "error"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """How the caller wants the answer sampled; None (or no stop sequences) leaves the
    vendor's default. Each adapter sends what its vendor takes, mapped to its names."""

    temperature: float | None = None  # 0 to 2, as OpenAI takes it
    top_p: float | None = None  # 0 to 1
    stop: tuple[str, ...] = ()  # at most 4
    seed: int | None = None
    user: str | None = None  # the caller's end-user id, for the vendor's abuse monitoring


DEFAULT_SAMPLING = Sampling()


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One call to one route; `max_tokens` is already clamped by the caller."""

    messages: tuple[Message, ...]
    max_tokens: int
    # time.monotonic() by which the whole request must be done; route chains plan their
    # retries within it, adapters can ignore it.
    deadline_at: float | None = None
    # The W3C `traceparent` header every vendor call of the request carries (the caller's
    # trace, our span as the parent), so a vendor's own tracing joins the trace.
    traceparent: str | None = None
    sampling: Sampling = DEFAULT_SAMPLING

    def trace_headers(self) -> dict[str, str] | None:
        return trace_headers(self.traceparent)


def trace_headers(traceparent: str | None) -> dict[str, str] | None:
    """The trace context headers of a vendor call; never anything else from the caller."""
    return {"traceparent": traceparent} if traceparent is not None else None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the vendor reported them (or counted them, for the demo)."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason


ProviderEvent = TextDelta | Usage | Finish


CredentialState = Literal["present", "missing", "refused", "unknown"]


@dataclass(frozen=True, slots=True)
class RouteHealth:
    """What a route's cheap check found; `problem` is operator text naming no secret."""

    credentials: CredentialState
    reachable: bool | None  # None when not tried (no credentials to try with)
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.credentials == "present" and self.reachable is True


@dataclass(frozen=True, slots=True)
class RouteAnswering:
    """Emitted by a route chain, never by an adapter: which route answers this request,
    after how many attempts on it, and from which tier of the chain."""

    route: str
    tier: str  # "primary" or "fallback"
    attempt: int


ChainEvent = ProviderEvent | RouteAnswering
