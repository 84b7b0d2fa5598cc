"""The names `model` may take, what each stands for, and what a tenant may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.env import SettingsError
from config.models import build_catalog, catalog_for
from config.settings import Settings
from providers.spec import RouteSpec
from tests.tenant_keys import config_env, tenants_toml

CHAIN = (RouteSpec("openai", "gpt-4o", aliases=("smart",)),
         RouteSpec("anthropic", "claude-haiku", aliases=("fast",)),
         RouteSpec("openai", "gpt-4o-mini"))
A, B, C = (route.name for route in CHAIN)


def test_each_name_stands_for_its_route_then_the_routes_after_it() -> None:
    catalog = build_catalog(CHAIN)
    assert catalog.routes_for("default", None) == (A, B, C)
    assert catalog.routes_for("smart", None) == (A, B, C)
    assert catalog.routes_for(B, None) == catalog.routes_for("fast", None) == (B, C)
    assert catalog.routes_for("claude-haiku", None) == (B, C)  # the vendor's model name
    assert catalog.routes_for("gpt-4o-mini", None) == (C,)
    assert list(catalog.names) == ["default", A, B, C, "smart", "fast", "gpt-4o",
                                   "claude-haiku", "gpt-4o-mini"]
    assert catalog.names["fast"].owner == "anthropic"


def test_a_tenants_list_bounds_the_names_and_the_fallbacks() -> None:
    catalog = build_catalog(CHAIN)
    listed = ("fast", "gpt-4o")
    assert catalog.allowed("fast", listed) and catalog.allowed(B, listed)  # same route
    assert catalog.allowed("smart", listed)  # gpt-4o is route A under another name
    assert not catalog.allowed("default", listed) and not catalog.allowed(C, listed)
    assert not catalog.allowed("unknown", None)
    assert catalog.routes_for("smart", listed) == (A, B)  # C is not the tenant's
    assert catalog.routes_for("fast", listed) == (B,)
    assert [entry.name for entry in catalog.listing(listed)] == [A, B, "smart", "fast",
                                                                  "gpt-4o", "claude-haiku"]
    assert catalog.permitted(listed) == (A, B) and catalog.permitted(None) == (A, B, C)
    everything = ("default",)
    assert catalog.routes_for(C, everything) == (C,)
    assert catalog.routes_for("default", everything) == (A, B, C)


def test_a_name_for_two_routes_is_refused_but_a_shared_model_name_goes_to_the_first() -> None:
    with pytest.raises(SettingsError, match="already names"):
        build_catalog((RouteSpec("openai", "a", aliases=("x",)),
                       RouteSpec("openai", "b", aliases=("x",))))
    with pytest.raises(SettingsError, match="already names"):
        build_catalog((RouteSpec("openai", "a", aliases=("default",)),))
    with pytest.raises(SettingsError, match="already names"):
        build_catalog((RouteSpec("openai", "a"), RouteSpec("demo", "b", aliases=("openai/a",))))
    shared = build_catalog((RouteSpec("openai", "m"), RouteSpec("anthropic", "m")))
    assert shared.routes_for("m", None) == ("openai/m", "anthropic/m")


def test_a_chain_of_other_routes_gets_a_catalog_of_its_own() -> None:
    configured = build_catalog(CHAIN)
    assert catalog_for([A, B, C], configured) is configured
    other = catalog_for(["demo/hello-1"], configured)
    assert other.routes_for("hello-1", None) == ("demo/hello-1",)
    assert not other.allowed("fast", ("fast",))  # names of another chain stand for nothing


def test_aliases_and_tenant_models_come_from_the_file(tmp_path: Path) -> None:
    toml = (tenants_toml(acme={"models": ["quick"]}) +
            '\n\n[[routes]]\nprovider = "demo"\nmodel = "hello-1"\naliases = ["quick"]\n')
    settings = Settings.from_env(config_env(tmp_path, toml))
    assert settings.models.routes_for("quick", None) == ("demo/hello-1",)
    assert settings.tenancy.policy("acme").models == ("quick",)
    assert settings.tenancy.policy("globex").models is None


@pytest.mark.parametrize(("acme", "route_extra", "where"), [
    ({"models": ["nope"]}, "", "tenants.acme.models"),
    ({"models": []}, "", "tenants.acme.models"),
    ({"models": "quick"}, "", "tenants.acme.models"),
    ({}, 'aliases = ["has space"]', "aliases"),
    ({}, 'aliases = "quick"', "aliases"),
])
def test_a_bad_name_stops_start_up_naming_where(tmp_path: Path, acme: dict[str, object],
                                                route_extra: str, where: str) -> None:
    toml = (tenants_toml(acme=acme) +
            f'\n\n[[routes]]\nprovider = "demo"\nmodel = "hello-1"\n{route_extra}\n')
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(config_env(tmp_path, toml))
    assert where in raised.value.variable
