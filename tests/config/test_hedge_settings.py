"""`HEDGE_AFTER_MS`: off unless set, read into the route chain's policy, refused when it could
never start a hedge."""

from __future__ import annotations

import pytest

from config.settings import Settings, SettingsError


def test_hedging_is_off_unless_set() -> None:
    assert Settings.from_env({}).retry.hedge_after_s is None
    assert Settings.from_env({"HEDGE_AFTER_MS": "0"}).retry.hedge_after_s is None
    assert Settings.from_env({"HEDGE_AFTER_MS": " "}).retry.hedge_after_s is None


def test_the_delay_is_read_in_milliseconds() -> None:
    settings = Settings.from_env({"HEDGE_AFTER_MS": "250", "TTFT_TIMEOUT_S": "2"})
    assert settings.retry.hedge_after_s == 0.25
    assert settings.retry.ttft_timeout_s == 2.0


@pytest.mark.parametrize(("env", "reason"), [
    ({"HEDGE_AFTER_MS": "0.5"}, "must be an integer, got '0.5'"),
    ({"HEDGE_AFTER_MS": "soon"}, "must be an integer, got 'soon'"),
    ({"HEDGE_AFTER_MS": "-1"}, "must be between 0 and 3600000"),
    ({"HEDGE_AFTER_MS": "30000"}, r"must be below TTFT_TIMEOUT_S \(30000 ms\), got 30000"),
    ({"HEDGE_AFTER_MS": "1500", "TTFT_TIMEOUT_S": "1.5"},
     r"must be below TTFT_TIMEOUT_S \(1500 ms\), got 1500"),
])
def test_a_bad_delay_stops_start_up_naming_it(env: dict[str, str], reason: str) -> None:
    with pytest.raises(SettingsError, match=reason) as caught:
        Settings.from_env(env)
    assert caught.value.variable == "HEDGE_AFTER_MS"
    assert str(caught.value).startswith("invalid configuration: HEDGE_AFTER_MS: ")
