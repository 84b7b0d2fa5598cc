from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings, SettingsError
from providers.spec import RouteSpec
from tests.tenant_keys import tenants_toml


def test_nothing_set_runs_the_demo_on_loopback() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.route == RouteSpec("demo", "hello-1")
    assert settings.heartbeat_s == 15.0
    assert settings.max_output_tokens == 1024


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env({
        "PORT": "9000", "HEARTBEAT_S": "2.5", "MAX_OUTPUT_TOKENS": "256",
        "PRIMARY_MODEL": "demo/other", "DEMO_TTFT_MS": "120", "DEMO_FAIL_AFTER_TOKENS": "4",
        "LOG_LEVEL": "DEBUG", "PROMPT_VERSION": "faq-v3", "HOST": "0.0.0.0",
        "ALLOW_OPEN_MODE": "true",
    })
    assert settings.port == 9000 and settings.heartbeat_s == 2.5
    assert settings.max_output_tokens == 256
    assert settings.route.name == "demo/other"
    assert settings.demo.ttft_s == pytest.approx(0.12)
    assert settings.demo.fail_after_tokens == 4
    assert settings.log_level == "DEBUG" and settings.prompt_version == "faq-v3"


def test_blank_values_count_as_unset() -> None:
    assert Settings.from_env({"PORT": "  ", "PRIMARY_MODEL": ""}).port == 8080


@pytest.mark.parametrize(("env", "variable", "reason"), [
    ({"PORT": "eighty"}, "PORT", "must be an integer"),
    ({"PORT": "70000"}, "PORT", "between 0 and 65535"),
    ({"HEARTBEAT_S": "0"}, "HEARTBEAT_S", "between"),
    ({"HEARTBEAT_S": "nan"}, "HEARTBEAT_S", "between"),
    ({"MAX_OUTPUT_TOKENS": "-1"}, "MAX_OUTPUT_TOKENS", "between"),
    ({"LLM_PROVIDER": "skynet"}, "LLM_PROVIDER", "must be one of"),
    ({"PRIMARY_MODEL": "nope/x"}, "PRIMARY_MODEL", "unknown provider"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "must be one of"),
    ({"FALLBACK_MODEL": "demo/b,,demo/c"}, "FALLBACK_MODEL", "has an empty entry"),
    ({"FALLBACK_MODEL": "demo/hello-1"}, "FALLBACK_MODEL", "appears twice in the chain"),
    ({"FALLBACK_MODEL": "nope/x"}, "FALLBACK_MODEL", "unknown provider"),
    ({"TTFT_TIMEOUT_S": "0"}, "TTFT_TIMEOUT_S", "between"),
    ({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS", "between"),
    ({"LOG_HASH_KEY": "short"}, "LOG_HASH_KEY", "at least 32 characters"),
    ({"CALLER_SYSTEM_MESSAGES": "strip"}, "CALLER_SYSTEM_MESSAGES",
     "must be one of allow, drop, refuse, got 'strip'"),
])
def test_invalid_values_name_the_variable(env: dict[str, str], variable: str,
                                          reason: str) -> None:
    with pytest.raises(SettingsError, match=reason) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"invalid configuration: {variable}: ")


def test_serve_refuses_to_start_with_one_clear_line() -> None:
    result = subprocess.run([sys.executable, "-m", "cli.main", "serve"],
                            env={"PATH": "", "HEARTBEAT_S": "soon"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hello-ship: invalid configuration: HEARTBEAT_S: must be a number, got 'soon'"]
    assert result.stdout == ""


def test_the_uvicorn_target_refuses_the_same_way() -> None:
    result = subprocess.run([sys.executable, "-c", "import app.main"],
                            env={"PATH": "", "PORT": "x"}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "PORT: must be an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_help_gives_an_example() -> None:
    result = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "example: hello-ship serve" in result.stdout
    assert "--workers" in result.stdout


def test_caller_system_messages_is_global_and_per_tenant(tmp_path: Path) -> None:
    assert Settings.from_env({}).tenancy.default_policy.system_messages == "allow"
    path = tmp_path / "hello-ship.toml"
    path.write_text(tenants_toml(acme={"system_messages": "refuse"}))
    settings = Settings.from_env({"HELLO_SHIP_CONFIG": str(path),
                                  "CALLER_SYSTEM_MESSAGES": "drop"})
    assert settings.tenancy.policy("acme").system_messages == "refuse"
    assert settings.tenancy.policy("globex").system_messages == "drop"  # the global one
    assert settings.tenancy.default_policy.system_messages == "drop"


@pytest.mark.parametrize("value", ['"strip"', "true", '"Drop"'])
def test_a_bad_tenant_system_messages_stops_start_up_naming_the_key(
        tmp_path: Path, value: str) -> None:
    path = tmp_path / "hello-ship.toml"
    path.write_text(tenants_toml().replace("[tenants.acme]\n",
                                           f"[tenants.acme]\nsystem_messages = {value}\n"))
    with pytest.raises(SettingsError, match="must be one of allow, drop, refuse") as caught:
        Settings.from_env({"HELLO_SHIP_CONFIG": str(path)})
    assert caught.value.variable == "HELLO_SHIP_CONFIG: tenants.acme.system_messages"
    assert "\n" not in str(caught.value)  # one line


def test_serve_refuses_a_bad_caller_system_messages_with_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "cli.main", "serve"],
                            env={"PATH": "", "CALLER_SYSTEM_MESSAGES": "strip"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hello-ship: invalid configuration: CALLER_SYSTEM_MESSAGES: must be one of allow, "
        "drop, refuse, got 'strip'"]
