"""Tenancy's refusals as HTTP answers: the status, headers and words a caller gets for each."""

from __future__ import annotations

from app.errors import ApiError
from quota.ledger import Refusal
from tenancy.errors import (
    LimitsUnavailable,
    OpenModeRefused,
    OverLimit,
    TenancyRefusal,
    Unauthenticated,
)


def refusal_error(refusal: TenancyRefusal) -> ApiError:
    if isinstance(refusal, Unauthenticated):
        message = ("The API key is not valid." if refusal.key_sent
                   else "Send your API key as 'Authorization: Bearer <key>'.")
        return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(refusal, OpenModeRefused):
        return ApiError(503, "open_mode_refused", "This service has no API keys configured, "
                                                  "so it only answers callers on this host.")
    if isinstance(refusal, LimitsUnavailable):
        return ApiError(503, "limits_unavailable",
                        "Usage limits cannot be checked right now; please retry shortly.",
                        headers={"Retry-After": str(refusal.retry_after_s)})
    if isinstance(refusal, OverLimit):
        return _over_limit(refusal)
    raise TypeError(f"no HTTP answer for {type(refusal).__name__}")


def _over_limit(over: OverLimit) -> ApiError:
    limits, kind = over.limits, over.refusal
    if kind in (Refusal.TENANT_RPM, Refusal.USER_RPM):
        who, limit = (("This API key's tenant", limits.rpm) if kind is Refusal.TENANT_RPM
                      else ("This API key's user", limits.user_rpm))
        return _too_many(over, "rate_limited",
                         f"{who} is over its limit of {limit} requests per minute.")
    if kind is Refusal.STREAMS:
        return _too_many(over, "too_many_streams",
                         f"This API key's tenant already has {limits.streams} answers in "
                         "progress; retry when one has finished.")
    what = "token" if kind is Refusal.TOKEN_BUDGET else "USD"
    if over.held_by_reservations:
        return _too_many(over, "budget_exceeded",
                         f"Answers in progress hold the rest of today's {what} budget; "
                         "retry when they have finished.")
    return _too_many(over, "budget_exceeded",
                     f"Today's {what} budget does not cover this request (its input plus "
                     f"max_tokens, up to {over.ask.tokens} tokens); a smaller max_tokens may "
                     "fit, and the budget renews at 00:00 UTC.")


def _too_many(over: OverLimit, code: str, message: str) -> ApiError:
    retry_after_s, limit = over.retry_after_s, over.refusal.value
    return ApiError(429, code, message, headers={"Retry-After": str(retry_after_s)},
                    logged={"tenant_id": over.ask.tenant, "user_id": over.ask.user,
                            "limit": limit, "retry_after_s": retry_after_s},
                    limit=limit, retry_after_s=retry_after_s)
