"""The vendors' rate-limit headers, read into windows: a limit, what remains of it, and when
it resets.

OpenAI (and the servers that pass its headers on, such as LiteLLM) sends
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the reset as a duration (`1s`, `6m0s`,
`20ms`); Anthropic sends `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
{limit,remaining,reset}`, the reset as an RFC 3339 time. AWS Bedrock sends none. A header that
is missing or malformed (or implausible: a count past 10^15, a reset more than a week
away) leaves its kind out: it never raises.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["requests", "tokens", "input_tokens", "output_tokens"]
KINDS: tuple[Kind, ...] = ("requests", "tokens", "input_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    remaining: int
    resets_at: float | None  # Unix time; None when the vendor did not say
    seen_at: float  # Unix time of the response that reported it

    def used(self) -> float:
        """The share of the limit used, 0 to 1."""
        return 1 - self.remaining / self.limit if self.limit else 1.0


MAX_COUNT = 10**15  # more than any vendor's limit, and exact as a float
MAX_RESET_S = 7 * 86_400.0  # the longest window vendors use is a day

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")


def read_rate_limits(headers: Mapping[str, str], now: float) -> dict[Kind, Window]:
    """The windows the headers report, by kind."""
    # One pass over the headers, then lookups in a small dict: a response's other headers
    # cost nothing more, and one with none of these costs a scan.
    found = {name.lower(): value for name, value in headers.items() if "ratelimit" in name.lower()}
    windows: dict[Kind, Window] = {}
    if not found:
        return windows
    for kind in KINDS:
        window = _openai(found, kind, now) or _anthropic(found, kind, now)
        if window is not None:
            windows[kind] = window
    return windows


def _openai(headers: Mapping[str, str], kind: Kind, now: float) -> Window | None:
    if kind not in ("requests", "tokens"):
        return None
    reset = _duration(headers.get(f"x-ratelimit-reset-{kind}"))
    return _window(headers.get(f"x-ratelimit-limit-{kind}"),
                   headers.get(f"x-ratelimit-remaining-{kind}"),
                   None if reset is None else now + reset, now)


def _anthropic(headers: Mapping[str, str], kind: Kind, now: float) -> Window | None:
    prefix = f"anthropic-ratelimit-{kind.replace('_', '-')}"
    return _window(headers.get(f"{prefix}-limit"), headers.get(f"{prefix}-remaining"),
                   _timestamp(headers.get(f"{prefix}-reset")), now)


def _window(limit: str | None, remaining: str | None, resets_at: float | None,
            now: float) -> Window | None:
    top, left = _count(limit), _count(remaining)
    if top is None or left is None:
        return None
    return plausible_window(top, left, resets_at, now)


def plausible_window(limit: int, remaining: int, resets_at: float | None,
                     seen_at: float) -> Window | None:
    """A window from numbers read anywhere (headers, another replica's), or None when they
    cannot be one: a limit of 0, counts out of range, times that are not finite."""
    if not (0 < limit <= MAX_COUNT and remaining >= 0) or not math.isfinite(seen_at):
        return None
    if resets_at is not None and not (math.isfinite(resets_at)
                                      and resets_at <= seen_at + MAX_RESET_S):
        resets_at = None
    return Window(limit, min(remaining, limit), resets_at, seen_at)


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    # ASCII digits only: str.isdigit also takes superscripts, which int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 15:
        return None
    return int(text)


def _duration(text: str | None) -> float | None:
    """Seconds in a Go-style duration (`1h2m3.5s`, `120ms`), or a bare number of seconds."""
    if text is None:
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) else None


def _timestamp(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
