"""Tenants, keys, limits and prices from the environment and the TOML file.

    [tenants.acme]
    keys = ["sha256:<hex>", { sha256 = "<hex>", user = "alice" }]
    rpm = 60
    user_rpm = 20
    max_streams = 10
    daily_budget_tokens = 200000
    daily_budget_usd = 5.0
    max_output_tokens = 512
    system_messages = "drop"       # the caller's system messages: allow, drop or refuse
    models = ["default", "fast"]   # what `model` may name on /v1/chat/completions (config.models)
    cache = "first"                # the answer cache: off, fallback or first (CACHE_MODE)

    [admin]
    keys = ["sha256:<hex>"]

    [metrics]                      # keys that may only scrape /metrics
    keys = ["sha256:<hex>"]

    [prices."openai/gpt-4o-mini"]   # USD per 1M tokens
    input = 0.15
    output = 0.60

What a tenant leaves out comes from the environment (`RPM_PER_TENANT`, `RPM_PER_USER`,
`STREAMS_PER_TENANT`, `DAILY_BUDGET_TOKENS`, `DAILY_BUDGET_USD`, `MAX_OUTPUT_TOKENS`,
`CALLER_SYSTEM_MESSAGES`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from cache.entry import CACHE_MODES, CacheMode
from config.env import EnvReader, SettingsError
from config.file import CONFIG_VAR
from providers.spec import RouteSpec
from quota.ledger import NANO_USD_PER_USD, Limits
from quota.prices import FREE, Price
from tenancy.identity import (
    ADMIN,
    ANONYMOUS,
    DIGEST_PREFIX,
    KEY_ID_DIGITS,
    SYSTEM_MESSAGE_POLICIES,
    Identity,
    SystemMessages,
    Tenancy,
    TenantPolicy,
)

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TENANT_KEYS = frozenset({"keys", "rpm", "user_rpm", "max_streams", "daily_budget_tokens",
                          "daily_budget_usd", "max_output_tokens", "system_messages",
                          "models", "guard", "cache"})  # the guard table is read by config.guard
_MAX_COUNT = 1_000_000_000_000
_Count = TypeVar("_Count", bound=int | None)  # a limit with a default, or an optional one


def read_tenancy(env: EnvReader, config: Mapping[str, Any], max_output_tokens: int) -> Tenancy:
    default = _env_policy(env, max_output_tokens)
    tenants = _table(config, "tenants", CONFIG_VAR)
    policies: dict[str, TenantPolicy] = {}
    keys: dict[bytes, Identity] = {}
    for tenant, entry in tenants.items():
        where = f"{CONFIG_VAR}: tenants.{tenant}"
        if not _NAME.fullmatch(tenant) or tenant in (ANONYMOUS, ADMIN):
            raise SettingsError(where, "a tenant id is 1-64 letters, digits and _ . - "
                                       f"(and not {ANONYMOUS!r} or {ADMIN!r})")
        if not isinstance(entry, dict):
            raise SettingsError(where, "must be a table")
        unknown = sorted(set(entry) - _TENANT_KEYS)
        if unknown:
            raise SettingsError(f"{where}.{unknown[0]}",
                                f"unknown key; known: {', '.join(sorted(_TENANT_KEYS))}")
        policies[tenant] = _tenant_policy(entry, default, where)
        tenant_keys = _keys(entry.get("keys"), f"{where}.keys")
        if not tenant_keys:  # else a tenant without keys could silently mean open mode
            raise SettingsError(f"{where}.keys", "a tenant needs at least one key")
        for digest, user in tenant_keys:
            if digest in keys:
                raise SettingsError(f"{where}.keys", "a key digest is listed twice")
            keys[digest] = Identity(tenant, user, digest.hex()[:KEY_ID_DIGITS])
    admin_keys = _service_keys(config, "admin", keys)
    metrics_keys = _service_keys(config, "metrics", keys)
    if admin_keys & metrics_keys:
        raise SettingsError(f"{CONFIG_VAR}: metrics.keys", "a scrape key is not also an admin key")
    return Tenancy(default, policies, keys, admin_keys, metrics_keys=metrics_keys)


def _service_keys(config: Mapping[str, Any], table: str,
                  tenant_keys: Mapping[bytes, Identity]) -> frozenset[bytes]:
    """The digests of `[admin]` or `[metrics]` keys: plain, and no tenant's."""
    entry = _table(config, table, CONFIG_VAR)
    unknown = sorted(set(entry) - {"keys"})
    if unknown:
        raise SettingsError(f"{CONFIG_VAR}: {table}.{unknown[0]}", "unknown key; known: keys")
    digests = set()
    for digest, user in _keys(entry.get("keys", []), f"{CONFIG_VAR}: {table}.keys"):
        if user is not None or digest in tenant_keys:
            raise SettingsError(f"{CONFIG_VAR}: {table}.keys",
                                f"an {table} key is a plain digest, and not also a tenant key")
        digests.add(digest)
    return frozenset(digests)


def read_prices(config: Mapping[str, Any], routes: tuple[RouteSpec, ...],
                tenancy: Tenancy) -> dict[str, Price]:
    """Prices per route; every route needs one when any tenant has a USD budget."""
    prices = {route.name: FREE for route in routes if route.provider == "demo"}
    names = {route.name for route in routes}
    for name, entry in _table(config, "prices", CONFIG_VAR).items():
        where = f"{CONFIG_VAR}: prices.{name!r}"
        if name not in names:
            raise SettingsError(where, f"is not a route of the chain ({', '.join(sorted(names))})")
        if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
            raise SettingsError(where, "needs exactly input and output, USD per 1M tokens")
        for side in ("input", "output"):
            if type(entry[side]) not in (int, float) or not 0 <= entry[side] < 1_000_000:
                raise SettingsError(f"{where}.{side}", "must be a number of USD per 1M tokens")
        prices[name] = Price(float(entry["input"]), float(entry["output"]))
    policies = [tenancy.default_policy, *tenancy.policies.values()]
    if any(policy.limits.daily_nano_usd is not None for policy in policies):
        unpriced = sorted(names - set(prices))
        if unpriced:
            raise SettingsError(f"{CONFIG_VAR}: prices", f"route {unpriced[0]} has no price, "
                                                         "and a USD budget needs one")
    return prices


def _env_policy(env: EnvReader, max_output_tokens: int) -> TenantPolicy:
    user_rpm = env.number("RPM_PER_USER", 0, int, 0, 10_000_000)
    budget_usd = env.raw("DAILY_BUDGET_USD")
    return TenantPolicy(
        Limits(
            rpm=env.number("RPM_PER_TENANT", 60, int, 1, 10_000_000),
            user_rpm=user_rpm or None,
            streams=env.number("STREAMS_PER_TENANT", 20, int, 1, 1_000_000),
            daily_tokens=env.number("DAILY_BUDGET_TOKENS", 1_000_000, int, 1, _MAX_COUNT),
            daily_nano_usd=None if budget_usd is None else _nano_usd(
                env.number("DAILY_BUDGET_USD", 0.0, float, 0.0, 1e9)),
        ),
        max_output_tokens,
        cast(SystemMessages, env.choice("CALLER_SYSTEM_MESSAGES", "allow",
                                        SYSTEM_MESSAGE_POLICIES)),
    )


def _tenant_policy(entry: Mapping[str, Any], default: TenantPolicy, where: str) -> TenantPolicy:
    def count(key: str, fallback: _Count, most: int = _MAX_COUNT) -> _Count:
        value: _Count = entry.get(key, fallback)
        if value is not None and (type(value) is not int or not 1 <= value <= most):
            raise SettingsError(f"{where}.{key}", f"must be an integer from 1 to {most}")
        return value

    limits = default.limits
    usd = entry.get("daily_budget_usd")
    if usd is not None and (type(usd) not in (int, float) or not 0 <= usd <= 1e9):
        raise SettingsError(f"{where}.daily_budget_usd", "must be a number of USD")
    system_messages = entry.get("system_messages", default.system_messages)
    if system_messages not in SYSTEM_MESSAGE_POLICIES:
        raise SettingsError(f"{where}.system_messages",
                            f"must be one of {', '.join(SYSTEM_MESSAGE_POLICIES)}, "
                            f"got {system_messages!r}")
    return TenantPolicy(
        Limits(
            rpm=count("rpm", limits.rpm),
            user_rpm=count("user_rpm", limits.user_rpm),
            streams=count("max_streams", limits.streams),
            daily_tokens=count("daily_budget_tokens", limits.daily_tokens),
            daily_nano_usd=limits.daily_nano_usd if usd is None else _nano_usd(usd),
        ),
        count("max_output_tokens", default.max_output_tokens, 1_000_000),
        system_messages,
        _models(entry.get("models"), f"{where}.models"),
        _cache_mode(entry.get("cache"), f"{where}.cache"),
    )


def _cache_mode(raw: object, where: str) -> CacheMode | None:
    if raw is None:
        return None
    if raw not in CACHE_MODES:
        raise SettingsError(where, f"must be one of {', '.join(CACHE_MODES)}, got {raw!r}")
    return raw


def _models(raw: object, where: str) -> tuple[str, ...] | None:
    """The names as listed; whether the service answers to each is checked with the routes."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(
            isinstance(name, str) and name.strip() for name in raw):
        raise SettingsError(where, "must be a non-empty list of model names")
    return tuple(raw)


def _keys(raw: object, where: str) -> list[tuple[bytes, str | None]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SettingsError(where, "must be a list of \"sha256:<hex>\" strings or tables")
    keys = []
    for entry in raw:
        user = None
        if isinstance(entry, dict):
            if set(entry) - {"sha256", "user"} or "sha256" not in entry:
                raise SettingsError(where, "a key table has sha256 and an optional user")
            text, user = entry["sha256"], entry.get("user")
            if user is not None and (not isinstance(user, str) or not _NAME.fullmatch(user)):
                raise SettingsError(where, "a user id is 1-64 letters, digits and _ . -")
        elif isinstance(entry, str) and entry.startswith(DIGEST_PREFIX):
            text = entry
        else:
            raise SettingsError(where, "a key is \"sha256:<hex digest>\" (hello-ship hash-key "
                                       "prints it), never the key itself")
        hex_digest = text.removeprefix(DIGEST_PREFIX) if isinstance(text, str) else ""
        if not _HEX_DIGEST.fullmatch(hex_digest):
            raise SettingsError(where, "a key is its SHA-256 digest in lowercase hex "
                                       "(hello-ship hash-key prints it), never the key itself")
        keys.append((bytes.fromhex(hex_digest), user))
    return keys


def _table(config: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    table = config.get(name, {})
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: {name}", "must be a table")
    return table


def _nano_usd(usd: float) -> int:
    return round(usd * NANO_USD_PER_USD)
