"""Reading the vendors' rate-limit headers: every format they use, and nothing from what is
malformed."""

from __future__ import annotations

import datetime

import httpx
import pytest

from providers.headroom import Headroom
from providers.rate_limits import Window, read_rate_limits

NOW = 1_800_000_000.0


def read(headers: dict[str, str]) -> dict[str, Window]:
    # As httpx holds them: bytes off the wire, read as Latin-1.
    raw = httpx.Headers({name: value.encode("latin-1") for name, value in headers.items()})
    return dict(read_rate_limits(raw, NOW))


@pytest.mark.parametrize(("reset", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5),
    ("59.9s", 59.9),
])
def test_openais_reset_durations(reset: str, seconds: float) -> None:
    windows = read({"X-RateLimit-Limit-Requests": "500", "x-ratelimit-remaining-requests": "499",
                    "x-ratelimit-reset-requests": reset})
    assert windows == {"requests": Window(500, 499, pytest.approx(NOW + seconds), NOW)}


def test_anthropics_four_kinds_and_their_reset_times() -> None:
    reset = datetime.datetime.fromtimestamp(NOW + 42, datetime.UTC)
    headers = {}
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        headers |= {f"anthropic-ratelimit-{kind}-limit": "1000",
                    f"anthropic-ratelimit-{kind}-remaining": "250",
                    f"anthropic-ratelimit-{kind}-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ")}
    windows = read(headers)
    assert set(windows) == {"requests", "tokens", "input_tokens", "output_tokens"}
    assert all(w == Window(1000, 250, NOW + 42, NOW) for w in windows.values())
    assert windows["tokens"].used() == 0.75


@pytest.mark.parametrize("headers", [
    {"x-ratelimit-limit-requests": "100"},  # no remaining
    {"x-ratelimit-limit-requests": "1e3", "x-ratelimit-remaining-requests": "5"},
    {"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "0"},
    {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "-5"},
    {"anthropic-ratelimit-tokens-limit": "ten", "anthropic-ratelimit-tokens-remaining": "1"},
    {"x-ratelimit-limit-requests": "²", "x-ratelimit-remaining-requests": "1"},  # isdigit()
    {"x-ratelimit-limit-requests": "1" * 400, "x-ratelimit-remaining-requests": "1"},
    {"x-ratelimit-limit-tokens": str(2**64), "x-ratelimit-remaining-tokens": "1"},
])
def test_a_malformed_window_is_left_out(headers: dict[str, str]) -> None:
    assert read(headers) == {}


@pytest.mark.parametrize("reset", ["soon", "1d", "nan", "inf", "-3", "5m30", "",
                                   "1" * 400 + "s", "200h"])
def test_a_malformed_reset_leaves_the_window_without_one(reset: str) -> None:
    windows = read({"x-ratelimit-limit-tokens": "10", "x-ratelimit-remaining-tokens": "12",
                    "x-ratelimit-reset-tokens": reset})
    assert windows == {"tokens": Window(10, 10, None, NOW)}  # more left than the limit: capped


def test_a_route_is_short_only_while_its_window_has_not_reset() -> None:
    headroom = Headroom("test/short")
    headroom.merge({"requests": Window(100, 2, NOW + 10, NOW)})
    assert headroom.short(0.95, NOW) == "requests"
    assert headroom.short(0.99, NOW) is None  # 98 % used
    assert headroom.short(0.95, NOW + 10) is None  # the window has reset
    headroom.merge({"requests": Window(100, 90, None, NOW - 1)})  # older: ignored
    assert headroom.short(0.95, NOW) == "requests"
    headroom.merge({"requests": Window(100, 1, None, NOW + 1)})  # no reset time: never short
    assert headroom.short(0.5, NOW) is None


def test_what_another_replica_wrote_is_read_only_when_it_can_be_a_window() -> None:
    from streaming.headroom_mirror import _windows

    good = b'{"limit":100,"remaining":5,"resets_at":1800000030.0,"seen_at":1800000000.0}'
    stored = [b"requests", good, b"tokens", b"not json", b"input_tokens",
              b'{"limit":"1' + b"1" * 400 + b'","remaining":1,"resets_at":null,"seen_at":1.0}',
              b"output_tokens", b'{"limit":1e400,"remaining":1,"resets_at":null,"seen_at":1}',
              b"furlongs", good]
    assert _windows(stored) == {"requests": Window(100, 5, 1800000030.0, 1800000000.0)}
