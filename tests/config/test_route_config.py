"""Routes from the environment and from the TOML file, and every way they can be wrong."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from config.settings import Settings, SettingsError
from providers.spec import RouteSpec, missing_key
from tests.servers import FAST_DEMO, app_server


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "hello-ship.toml"
    path.write_text(text)
    return {"HELLO_SHIP_CONFIG": str(path)}


def test_llm_provider_and_primary_model_pick_a_vendor_route() -> None:
    settings = Settings.from_env({"LLM_PROVIDER": "openai", "PRIMARY_MODEL": "gpt-4o",
                                  "OPENAI_API_KEY": "sk-from-env",
                                  "OPENAI_BASE_URL": "http://127.0.0.1:4000/v1"})
    (route,) = settings.routes
    assert (route.name, route.base_url) == ("openai/gpt-4o", "http://127.0.0.1:4000/v1")
    assert route.credentials is not None and route.credentials.description == "OPENAI_API_KEY"
    assert route.credentials.key is not None and route.credentials.key.reveal() == "sk-from-env"


def test_a_key_never_shows_in_the_settings_repr() -> None:
    settings = Settings.from_env({"LLM_PROVIDER": "anthropic",
                                  "ANTHROPIC_API_KEY": "sk-ant-very-secret"})
    assert "very-secret" not in repr(settings) and "very-secret" not in str(settings.routes)
    assert settings.route.name == "anthropic/claude-3-5-haiku-latest"


def test_a_missing_key_is_not_a_start_up_error() -> None:
    """It is reported by /ready instead, so one good route of several still serves."""
    route = Settings.from_env({"LLM_PROVIDER": "openai"}).route
    assert route.credentials is not None and not route.credentials.present


def test_bedrock_takes_its_endpoint_and_region_from_the_aws_variables() -> None:
    route = Settings.from_env({
        "LLM_PROVIDER": "bedrock", "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "http://127.0.0.1:9000",
    }).route
    assert (route.region, route.base_url) == ("eu-west-1", "http://127.0.0.1:9000")
    assert route.credentials is None  # the AWS credential chain, not a key variable


def test_the_toml_route_list(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk-from-file\n")
    env = write_config(tmp_path, f"""
[[routes]]
provider = "openai"
model = "llama3.1:8b"
base_url = "http://127.0.0.1:11434/v1"
api_key_file = "{tmp_path / 'key'}"
max_tokens = 256
timeout_s = 20
""")
    (route,) = Settings.from_env(env).routes
    assert route == RouteSpec("openai", "llama3.1:8b", base_url="http://127.0.0.1:11434/v1",
                              credentials=route.credentials, max_tokens=256, timeout_s=20.0)
    assert route.credentials is not None and route.credentials.key is not None
    assert route.credentials.key.reveal() == "sk-from-file"
    assert route.output_cap(1024) == 256 and route.output_cap(100) == 100


def test_a_route_names_the_variable_holding_its_key(tmp_path: Path) -> None:
    env = write_config(tmp_path, """
[[routes]]
provider = "anthropic"
model = "claude-3-5-haiku-20241022"
api_key_env = "TEAM_ANTHROPIC_KEY"
""")
    route = Settings.from_env({**env, "TEAM_ANTHROPIC_KEY": "sk-ant-team"}).route
    assert route.credentials is not None and route.credentials.description == "TEAM_ANTHROPIC_KEY"
    assert route.credentials.present


def test_primary_model_in_the_environment_overrides_the_files_first_route(
        tmp_path: Path) -> None:
    env = write_config(tmp_path, """
[[routes]]
provider = "openai"
model = "gpt-4o"
base_url = "http://127.0.0.1:4000/v1"
max_tokens = 300
""")
    # Same provider: only the model changes; the route's endpoint and cap stay.
    same = Settings.from_env({**env, "PRIMARY_MODEL": "gpt-4o-mini"}).route
    assert (same.name, same.base_url, same.max_tokens) == (
        "openai/gpt-4o-mini", "http://127.0.0.1:4000/v1", 300)
    # Another provider: that provider's own defaults, nothing from the other vendor's route.
    other = Settings.from_env({**env, "PRIMARY_MODEL": "demo/other"}).route
    assert other == RouteSpec("demo", "other")


def test_the_file_is_checked_even_when_the_environment_overrides_it(tmp_path: Path) -> None:
    env = write_config(tmp_path, '[[routes]]\nprovider = "openai"\nmodel = "x"\nbogus = 1\n')
    with pytest.raises(SettingsError, match="bogus"):
        Settings.from_env({**env, "PRIMARY_MODEL": "demo/other"})


def test_llm_provider_alone_does_not_silently_lose_to_the_file(tmp_path: Path) -> None:
    env = write_config(tmp_path, '[[routes]]\nprovider = "openai"\nmodel = "x"\n')
    with pytest.raises(SettingsError, match="set PRIMARY_MODEL too") as caught:
        Settings.from_env({**env, "LLM_PROVIDER": "anthropic"})
    assert caught.value.variable == "LLM_PROVIDER"


def test_an_empty_key_file_says_so_in_readiness(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("\n")
    env = write_config(tmp_path, f'[[routes]]\nprovider = "openai"\nmodel = "x"\n'
                                 f'api_key_file = "{tmp_path / "key"}"\n')
    route = Settings.from_env(env).route
    assert route.credentials is not None and not route.credentials.present
    assert missing_key(route) == f"no API key: {tmp_path / 'key'} is empty"


def _unreadable_key_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "key"
    if kind == "a directory":
        path.mkdir()
    elif kind == "not UTF-8":
        path.write_bytes(b"sk-\xff\xfeSECRET-MARKER\n")
    return path  # "missing": nothing there


@pytest.mark.parametrize(("kind", "reason"), [
    ("missing", "No such file or directory"),
    ("a directory", "Is a directory"),
    ("not UTF-8", "not UTF-8 text"),
])
def test_a_key_file_that_cannot_be_read_is_a_missing_key_not_a_start_up_error(
        tmp_path: Path, kind: str, reason: str) -> None:
    path = _unreadable_key_file(tmp_path, kind)
    env = write_config(tmp_path, f'[[routes]]\nprovider = "openai"\nmodel = "x"\n'
                                 f'api_key_file = "{path}"\n')
    route = Settings.from_env(env).route
    assert route.credentials is not None and not route.credentials.present
    assert route.credentials.description == f"the file {path}"
    assert missing_key(route) == f"no API key: cannot read {path}: {reason}"
    assert "SECRET-MARKER" not in missing_key(route)


def test_a_route_whose_key_file_is_missing_starts_and_ready_names_it(tmp_path: Path) -> None:
    """The documented promise: one bad route of two does not take the service down."""
    path = tmp_path / "absent-key"
    env = write_config(tmp_path, f"""
[[routes]]
provider = "openai"
model = "gpt-4o-mini"
api_key_file = "{path}"

[[routes]]
provider = "demo"
model = "backup"
""")
    settings = Settings.from_env({**FAST_DEMO, **env})
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        ready = client.get(live.url + "/ready")
        answer = client.post(live.url + "/chat", json={"message": "hello"})
    assert ready.status_code == 200, ready.text  # the demo route is usable
    first, second = ready.json()["routes"]
    assert first["route"] == "openai/gpt-4o-mini" and first["usable"] is False
    assert first["credentials"] == "missing"
    assert first["problem"] == f"no API key: cannot read {path}: No such file or directory"
    assert second["route"] == "demo/backup" and second["usable"] is True
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_route"] == "demo/backup" and answer.json()["answer"]


@pytest.mark.parametrize(("config", "variable", "reason"), [
    ("routes = [", "HELLO_SHIP_CONFIG", "not valid TOML"),
    ("[tenant.acme]\nrpm = 5\n", "HELLO_SHIP_CONFIG", "unknown table or key 'tenant'"),
    ("routes = []\n", "HELLO_SHIP_CONFIG", "non-empty array"),
    ('[[routes]]\nprovider = "openai"\nmodle = "x"\n',
     "HELLO_SHIP_CONFIG: routes[0].modle", "unknown key"),
    ('[[routes]]\nprovider = "openai"\n', "HELLO_SHIP_CONFIG: routes[0]", "needs provider"),
    ('[[routes]]\nprovider = "skynet"\nmodel = "x"\n',
     "HELLO_SHIP_CONFIG: routes[0].provider", "must be one of demo, openai"),
    ('[[routes]]\nprovider = "openai/x"\nmodel = "y"\n',
     "HELLO_SHIP_CONFIG: routes[0].provider", "got 'openai/x'"),
    ('[[routes]]\nprovider = "openai"\nmodel = "x"\nregion = "us-east-1"\n',
     "HELLO_SHIP_CONFIG: routes[0].region", "does not apply to openai routes"),
    ('[[routes]]\nprovider = "bedrock"\nmodel = "x"\napi_key_env = "K"\n',
     "HELLO_SHIP_CONFIG: routes[0].api_key_env", "does not apply to bedrock routes"),
    ('[[routes]]\nprovider = "demo"\nmodel = "x"\nbase_url = "nonsense"\n',
     "HELLO_SHIP_CONFIG: routes[0].base_url", "does not apply to demo routes"),
    ('[[routes]]\nprovider = "bedrock"\nmodel = "x"\nregion = "us east 1"\n',
     "HELLO_SHIP_CONFIG: routes[0].region", "is not an AWS region name"),
    ('[[routes]]\nprovider = "openai"\nmodel = "x"\nmax_tokens = 0\n',
     "HELLO_SHIP_CONFIG: routes[0].max_tokens", "positive integer"),
    ('[[routes]]\nprovider = "openai"\nmodel = "x"\ntimeout_s = "soon"\n',
     "HELLO_SHIP_CONFIG: routes[0].timeout_s", "number of seconds"),
    ('[[routes]]\nprovider = "openai"\nmodel = "x"\nbase_url = "localhost:4000"\n',
     "HELLO_SHIP_CONFIG: routes[0].base_url", "http(s) URL"),
    ('[[routes]]\nprovider = "openai"\nmodel = "x"\napi_key_env = "K"\n'
     'api_key_file = "/run/secrets/k"\n',
     "HELLO_SHIP_CONFIG: routes[0]", "give api_key_env or api_key_file, not both"),
    ('[[routes]]\nprovider = "bedrock"\nmodel = "x"\n', "AWS_REGION", "must be set"),
    ('[[routes]]\nprovider = "demo"\nmodel = "a"\n[[routes]]\nprovider = "demo"\nmodel = "a"\n',
     "HELLO_SHIP_CONFIG", "route demo/a appears twice in the chain"),
    ('[[routes]]\nprovider = "demo"\nmodel = "a"\nmax_rpm = 0\n',
     "HELLO_SHIP_CONFIG: routes[0].max_rpm", "positive integer"),
])
def test_a_bad_config_file_names_the_key(tmp_path: Path, config: str, variable: str,
                                         reason: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(reason)) as caught:
        Settings.from_env(write_config(tmp_path, config))
    assert caught.value.variable == variable


@pytest.mark.parametrize(("env", "variable", "reason"), [
    ({"HELLO_SHIP_CONFIG": "/nonexistent/hello-ship.toml"}, "HELLO_SHIP_CONFIG", "cannot read"),
    ({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL", "http(s)"),
    ({"LLM_PROVIDER": "bedrock"}, "AWS_REGION", "must be set"),
    ({"LLM_PROVIDER": "openai", "PRIMARY_MODEL": "meta-llama/Llama-3"}, "PRIMARY_MODEL",
     "written provider/model, e.g. openai/meta-llama/Llama-3"),
    # Without LLM_PROVIDER a bare model would quietly be a demo route answering canned text.
    ({"PRIMARY_MODEL": "gpt-4o-mini", "OPENAI_API_KEY": "sk-x"}, "PRIMARY_MODEL",
     "'gpt-4o-mini' names no provider: set LLM_PROVIDER, or write provider/model"),
    ({"LLM_PROVIDER": "bedrock", "AWS_REGION": "us east 1"}, "AWS_REGION",
     "not an AWS region name"),
])
def test_bad_route_variables_name_themselves(env: dict[str, str], variable: str,
                                             reason: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(reason)) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_fallback_model_makes_a_chain_across_vendors() -> None:
    settings = Settings.from_env({
        "LLM_PROVIDER": "openai", "PRIMARY_MODEL": "gpt-4o-mini",
        "FALLBACK_MODEL": "gpt-4o, anthropic/claude-3-5-haiku-20241022",
        "OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2", "FALLBACK_MAX_RPM": "30"})
    assert [r.name for r in settings.routes] == [
        "openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-3-5-haiku-20241022"]
    assert [r.max_rpm for r in settings.routes] == [None, 30, 30]  # fallbacks only
    anthropic_route = settings.routes[2]
    assert anthropic_route.credentials is not None
    assert anthropic_route.credentials.description == "ANTHROPIC_API_KEY"


def test_the_file_chain_and_the_environment_fallbacks(tmp_path: Path) -> None:
    env = write_config(tmp_path, """
[[routes]]
provider = "demo"
model = "first"
[[routes]]
provider = "demo"
model = "second"
max_rpm = 5
""")
    file_chain = Settings.from_env(env).routes
    assert [(r.name, r.max_rpm) for r in file_chain] == [("demo/first", None),
                                                         ("demo/second", 5)]
    overridden = Settings.from_env({**env, "FALLBACK_MODEL": "demo/third"}).routes
    assert [r.name for r in overridden] == ["demo/first", "demo/third"]


def test_disabled_routes_must_name_routes_of_the_chain() -> None:
    env = {"FALLBACK_MODEL": "demo/backup"}
    assert Settings.from_env({**env, "DISABLED_ROUTES": "demo/hello-1"}).disabled_routes == {
        "demo/hello-1"}
    with pytest.raises(SettingsError, match="'demo/typo' is not a route of the chain"):
        Settings.from_env({**env, "DISABLED_ROUTES": "demo/typo"})


def test_connect_timeout_reaches_every_route() -> None:
    settings = Settings.from_env({"FALLBACK_MODEL": "demo/backup", "CONNECT_TIMEOUT_S": "2.5"})
    assert [r.connect_timeout_s for r in settings.routes] == [2.5, 2.5]


def test_a_bare_fallback_model_takes_the_primarys_provider() -> None:
    """Not LLM_PROVIDER's default: `gpt-4o` after `openai/gpt-4o-mini` is an OpenAI model."""
    settings = Settings.from_env({"PRIMARY_MODEL": "openai/gpt-4o-mini",
                                  "FALLBACK_MODEL": "gpt-4o", "OPENAI_API_KEY": "sk-1"})
    assert [r.name for r in settings.routes] == ["openai/gpt-4o-mini", "openai/gpt-4o"]
