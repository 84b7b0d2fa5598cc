from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from providers.credentials import Secret
from providers.vendor_errors import describe, retry_after_seconds, safe_code


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
    ({"retry-after": "soon"}, None),
    ({"retry-after": "-3"}, 0.0),
    ({"retry-after": "999999"}, 3600.0),  # a vendor cannot park a request for days
    ({}, None),
    (None, None),
])
def test_retry_after_is_read_in_seconds(headers: dict[str, str] | None,
                                        seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


def test_retry_after_as_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after_seconds({"retry-after": format_datetime(when, usegmt=True)})
    assert seconds is not None and 28 <= seconds <= 30


def test_only_identifier_shaped_codes_are_kept() -> None:
    assert safe_code("rate_limit_exceeded") == "rate_limit_exceeded"
    assert safe_code("ThrottlingException") == "ThrottlingException"
    assert safe_code("Incorrect API key provided: sk-abc") is None
    assert safe_code(None) is None and safe_code(429) is None
    assert describe("openai", 429, "rate_limit_exceeded") == (
        "openai returned HTTP 429 (rate_limit_exceeded)")


def test_a_secret_prints_as_stars() -> None:
    key = Secret("sk-live-abcdef")
    assert "abcdef" not in f"{key} {key!r} {[key]}"
    assert key.reveal() == "sk-live-abcdef"
