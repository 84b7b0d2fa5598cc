"""How a failure becomes the user-safe `error` frame: codes, copy and incident ids."""

from __future__ import annotations

import secrets

from providers.errors import ProviderError, ProviderMisconfigured
from streaming.frames import ErrorFrame

# code -> (user-safe message, whether the same request may succeed if retried)
ERROR_COPY: dict[str, tuple[str, bool]] = {
    "provider_unavailable": (
        "The assistant is temporarily unavailable. Please try again in a moment.", True),
    "provider_error": ("The assistant could not answer this request.", False),
    "stream_interrupted": (
        "The answer was interrupted before it finished. Please try again.", True),
    "output_blocked": ("The answer was stopped by the content policy.", False),
    "shutting_down": ("The service is restarting. Please try again.", True),
    "internal_error": ("Something went wrong on our side. Please try again.", True),
    "stopped": ("The answer was stopped.", False),
    "resume_expired": ("This answer can no longer be resumed. Please ask again.", False),
}


def new_incident_id() -> str:
    return "inc_" + secrets.token_hex(8)


def error_frame(code: str, *, request_id: str, tokens_emitted: int,
                retry_after: float | None = None, message: str | None = None) -> ErrorFrame:
    """The frame for `code`, with its standard copy unless `message` replaces it."""
    copy, retryable = ERROR_COPY[code]
    return ErrorFrame(
        code=code,
        message=message or copy,
        request_id=request_id,
        incident_id=new_incident_id(),
        tokens_emitted=tokens_emitted,
        retryable=retryable,
        retry_after=retry_after,
    )


def provider_failure_code(error: ProviderError, tokens_emitted: int) -> str:
    """Before the first token the route failed; after it, the answer was cut short.

    A route with a missing or refused key is down for everyone, which users see as an
    outage, not as something wrong with their request.
    """
    if tokens_emitted:
        return "stream_interrupted"
    if error.retryable or isinstance(error, ProviderMisconfigured):
        return "provider_unavailable"
    return "provider_error"
