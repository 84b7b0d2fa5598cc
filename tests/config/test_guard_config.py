"""Guardrail configuration: defaults, overrides, tenants, plugins, and the start-up errors."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from config.env import SettingsError
from config.guard import GuardSettings
from config.settings import Settings
from guard.builtin import BUILTIN
from guard.policy import GuardPolicy
from tests.guard.plugin_detector import SlowEngine
from tests.servers import FAST_DEMO, app_server
from tests.tenant_keys import config_env, tenants_toml


def guard_from(tmp_path: Path, toml: str = "", **env: str) -> GuardSettings:
    files = config_env(tmp_path, toml) if toml else {}
    return Settings.from_env({**files, **env}).guard


def test_the_defaults_redact_output_and_input_secrets(tmp_path: Path) -> None:
    guard = guard_from(tmp_path)
    assert guard.policy == GuardPolicy("allow", "redact", "redact", "redact")
    assert [d.name for d in guard.detectors] == list(BUILTIN)
    assert guard.hold_s == 0.1 and guard.buffer_chars == 400
    assert guard.moderation.backend == "off"


def test_environment_overrides_the_file_and_tenants_override_both(tmp_path: Path) -> None:
    toml = tenants_toml(extra='[guard]\noutput_pii = "block"\ninput_pii = "refuse"\n'
                              'hold_ms = 100\n\n[tenants.acme.guard]\noutput_secrets = "allow"\n')
    guard = guard_from(tmp_path, toml, GUARD_OUTPUT_PII="redact", GUARD_HOLD_MS="50")
    assert guard.policy == GuardPolicy("refuse", "redact", "redact", "redact")
    assert guard.policy_for("acme") == GuardPolicy("refuse", "redact", "redact", "allow")
    assert guard.policy_for("globex") == guard.policy
    assert guard.hold_s == 0.05


@pytest.mark.parametrize(("toml", "env", "named"), [
    ('[guard]\noutput_pii = "maybe"\n', {}, "guard.output_pii"),
    ('[guard]\ninput_pii = "block"\n', {}, "guard.input_pii"),  # input refuses, not blocks
    ('[guard]\nshout = true\n', {}, "guard.shout"),
    ('[guard]\nblocked_patterns = ["(unclosed"]\n', {}, "guard.blocked_patterns[0]"),
    ('[guard]\nblocked_patterns = ["x*"]\n', {}, "guard.blocked_patterns[0]"),
    ('[guard]\nbuffer_chars = 10\n', {}, "guard.buffer_chars"),
    ('[guard]\ndetectors = ["email", "telepathy"]\n', {}, "guard.detectors"),
    ("", {"GUARD_DETECTORS": "email,no.such.module:Thing"}, "GUARD_DETECTORS"),
    ("", {"GUARD_DETECTORS": "tests.guard.plugin_detector:NOT_A_DETECTOR"},
     "GUARD_DETECTORS"),
    ("", {"GUARD_DETECTORS": "email,email"}, "GUARD_DETECTORS"),
    ("", {"GUARD_OUTPUT_SECRETS": "hide"}, "GUARD_OUTPUT_SECRETS"),
    ("", {"MODERATION": "openai"}, "MODERATION"),  # without OPENAI_API_KEY
    ("", {"GUARD_HOLD_MS": "0"}, "GUARD_HOLD_MS"),  # every release would restart at once
    ('[guard]\nhold_ms = 0\n', {}, "guard.hold_ms"),
    ("", {"GUARD_DETECTORS": ":x"}, "GUARD_DETECTORS"),
    ("", {"GUARD_DETECTORS": "json:loads"}, "GUARD_DETECTORS"),  # calling it fails
])
def test_bad_guard_configuration_fails_at_start_up_naming_the_key(
        tmp_path: Path, toml: str, env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as error:
        guard_from(tmp_path, toml, **env)
    assert named in error.value.variable


def test_a_tenant_guard_table_accepts_only_actions(tmp_path: Path) -> None:
    toml = tenants_toml(extra='[tenants.acme.guard]\nhold_ms = 1\n')
    with pytest.raises(SettingsError) as error:
        guard_from(tmp_path, toml)
    assert "tenants.acme.guard.hold_ms" in error.value.variable


def test_a_plugged_in_detector_guards_the_stream_without_pipeline_changes() -> None:
    env = {**FAST_DEMO, "GUARD_DETECTORS": "email,tests.guard.plugin_detector:ProjectCodename"}
    settings = Settings.from_env(env)
    assert [d.name for d in settings.guard.detectors] == ["email", "codename"]
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        answer = client.post(live.url + "/chat", json={
            "message": "/echo The launch is BLUEBIRD-7 on Monday."}).json()["answer"]
    assert answer == "The launch is [redacted:codename] on Monday."


def test_a_slow_plugged_in_detector_does_not_hold_up_other_requests() -> None:
    env = {**FAST_DEMO, "GUARD_INPUT_PII": "redact",
           "GUARD_DETECTORS": "email,tests.guard.plugin_detector:SlowEngine"}
    with app_server(Settings.from_env(env)) as live, httpx.Client(timeout=10) as client, \
            ThreadPoolExecutor(1) as pool:
        judged = pool.submit(client.post, live.url + "/chat",
                             json={"message": "/echo JUDGE-SLOWLY this one"})
        time.sleep(0.1)  # the slow check has begun
        started = time.monotonic()
        health = client.get(live.url + "/health")
        waited = time.monotonic() - started
        answer = judged.result(timeout=10)
    assert health.status_code == 200 and answer.status_code == 200
    assert waited < SlowEngine.seconds_per_text / 2  # not queued behind the slow check
