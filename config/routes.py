"""The route chain from configuration: `LLM_PROVIDER` + `PRIMARY_MODEL`, or `[[routes]]` in TOML.

Keys are read here, once, from the variable or file each route names; the spec carries the
key as a `Secret`, and everything an operator sees names only where the key came from.
A missing key is not a start-up error, nor is a key file that cannot be read: the route is
reported unusable by `/ready`, so a service with one good route of two still serves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.env import EnvReader, SettingsError
from config.file import CONFIG_VAR
from config.models import read_aliases
from providers.credentials import KeySource, Secret
from providers.spec import (
    BASE_URL_ENV,
    DEFAULT_KEY_ENV,
    DEFAULT_MODELS,
    DEFAULT_TIMEOUT_S,
    PROVIDER_KINDS,
    RouteSpec,
    parse_route,
)

_ROUTE_KEYS = frozenset({"provider", "model", "base_url", "api_key_env", "api_key_file",
                         "max_tokens", "timeout_s", "region", "max_rpm", "aliases"})
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")


def read_routes(env: EnvReader, config: Mapping[str, Any]) -> tuple[RouteSpec, ...]:
    """The chain, in order.

    The file is always checked in full. `PRIMARY_MODEL` in the environment overrides its first
    route's model (and provider, when it names one); the vendors' variables fill in whatever
    a route leaves out.
    """
    if "routes" not in config:
        first_route = _env_route(env)
        chain = (first_route, *_fallback_routes(env, first_route.provider))
        return _dedupe(chain, "FALLBACK_MODEL")
    routes = config["routes"]
    if not isinstance(routes, list) or not routes:
        raise SettingsError(CONFIG_VAR, "routes must be a non-empty array of tables")
    specs = [_file_route(env, index, entry) for index, entry in enumerate(routes)]
    primary = env.raw("PRIMARY_MODEL")
    if primary is None:
        if env.raw("LLM_PROVIDER"):
            raise SettingsError("LLM_PROVIDER", f"the routes in {CONFIG_VAR} name their "
                                                "providers; unset it, or set PRIMARY_MODEL too")
    else:
        first = specs[0]
        spec = _parse_primary(primary, env.raw("LLM_PROVIDER") or first.provider)
        if spec.provider == first.provider:  # the route's endpoint, key and limits still apply
            specs[0] = replace(first, model=spec.model)
        else:
            specs[0] = complete_route(env, spec, "PRIMARY_MODEL")
    source = CONFIG_VAR
    if env.raw("FALLBACK_MODEL") is not None:  # the environment's fallbacks replace the file's
        specs[1:] = _fallback_routes(env, specs[0].provider)
        source = "FALLBACK_MODEL"
    return _dedupe(tuple(specs), source)


def _fallback_routes(env: EnvReader, default_provider: str) -> list[RouteSpec]:
    """`FALLBACK_MODEL`: comma-separated `model` or `provider/model`, tried in order."""
    raw = env.raw("FALLBACK_MODEL")
    if raw is None:
        return []
    specs = []
    for item in raw.split(","):
        if not item.strip():
            raise SettingsError("FALLBACK_MODEL", f"has an empty entry: {raw!r}")
        try:
            spec = parse_route(item, default_provider)
        except ValueError as exc:
            raise SettingsError("FALLBACK_MODEL", str(exc)) from None
        specs.append(complete_route(env, spec, "FALLBACK_MODEL"))
    return specs


def _dedupe(specs: tuple[RouteSpec, ...], source: str) -> tuple[RouteSpec, ...]:
    """A route twice in one chain would share its breaker and double its retries."""
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SettingsError(source, f"route {repeated[0]} appears twice in the chain")
    return specs


def _env_route(env: EnvReader) -> RouteSpec:
    provider = env.choice("LLM_PROVIDER", "demo", PROVIDER_KINDS)
    primary = env.raw("PRIMARY_MODEL")
    if primary is None:
        spec = RouteSpec(provider, DEFAULT_MODELS[provider])
    elif "/" not in primary and env.raw("LLM_PROVIDER") is None:
        # Else `gpt-4o-mini` alone would quietly become a demo route answering canned text.
        raise SettingsError("PRIMARY_MODEL", f"{primary!r} names no provider: set LLM_PROVIDER,"
                                             f" or write provider/model")
    else:
        spec = _parse_primary(primary, provider)
    return complete_route(env, spec, "PRIMARY_MODEL")


def _parse_primary(text: str, default_provider: str) -> RouteSpec:
    try:
        return parse_route(text, default_provider)
    except ValueError as exc:
        raise SettingsError("PRIMARY_MODEL", str(exc)) from None


# Which optional keys mean something for each provider; any other is refused, not ignored.
_APPLICABLE: dict[str, frozenset[str]] = {
    "demo": frozenset({"max_tokens", "max_rpm", "aliases"}),
    "openai": frozenset({"base_url", "api_key_env", "api_key_file", "max_tokens", "timeout_s",
                         "max_rpm", "aliases"}),
    "anthropic": frozenset({"base_url", "api_key_env", "api_key_file", "max_tokens",
                            "timeout_s", "max_rpm", "aliases"}),
    "bedrock": frozenset({"base_url", "max_tokens", "timeout_s", "region", "max_rpm",
                          "aliases"}),
}


def _file_route(env: EnvReader, index: int, entry: object) -> RouteSpec:
    where = f"{CONFIG_VAR}: routes[{index}]"
    if not isinstance(entry, dict):
        raise SettingsError(where, "must be a table")
    unknown = sorted(set(entry) - _ROUTE_KEYS)
    if unknown:
        known = ", ".join(sorted(_ROUTE_KEYS))
        raise SettingsError(f"{where}.{unknown[0]}", f"unknown key; known: {known}")
    provider = _text(entry, "provider", where)
    model = _text(entry, "model", where)
    if provider is None or model is None:
        raise SettingsError(where, "needs provider and model")
    if provider not in PROVIDER_KINDS:
        raise SettingsError(f"{where}.provider",
                            f"must be one of {', '.join(PROVIDER_KINDS)}, got {provider!r}")
    if any(c.isspace() for c in model):
        raise SettingsError(f"{where}.model", f"{model!r} is not a model name")
    extra = sorted(set(entry) - {"provider", "model"} - _APPLICABLE[provider])
    if extra:
        raise SettingsError(f"{where}.{extra[0]}", f"does not apply to {provider} routes")
    max_tokens = entry.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        raise SettingsError(f"{where}.max_tokens", "must be a positive integer")
    timeout_s = entry.get("timeout_s", DEFAULT_TIMEOUT_S)
    if type(timeout_s) not in (int, float) or not 0.1 <= timeout_s <= 3600:
        raise SettingsError(f"{where}.timeout_s", "must be a number of seconds, 0.1 to 3600")
    max_rpm = entry.get("max_rpm")
    if max_rpm is not None and (type(max_rpm) is not int or max_rpm < 1):
        raise SettingsError(f"{where}.max_rpm", "must be a positive integer")
    spec = RouteSpec(provider, model, max_tokens=max_tokens, timeout_s=float(timeout_s),
                     max_rpm=max_rpm, aliases=read_aliases(entry, where))
    return complete_route(env, spec, where, base_url=_text(entry, "base_url", where),
                     key_env=_text(entry, "api_key_env", where),
                     key_file=_text(entry, "api_key_file", where),
                     region=_text(entry, "region", where))


def complete_route(env: EnvReader, spec: RouteSpec, where: str, *, base_url: str | None = None,
              key_env: str | None = None, key_file: str | None = None,
              region: str | None = None) -> RouteSpec:
    """Fill in the base URL, key and region from the route, else the vendor's own variables."""
    if spec.provider == "demo":
        return spec
    url_source = f"{where}.base_url"
    if base_url is None:
        url_source = BASE_URL_ENV[spec.provider]
        base_url = env.raw(url_source)
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(url_source, f"must be an http(s) URL, got {base_url!r}")
    credentials = None
    if spec.provider in DEFAULT_KEY_ENV:
        if key_env and key_file:
            raise SettingsError(where, "give api_key_env or api_key_file, not both")
        credentials = (key_from_file(key_file) if key_file
                       else _key_from_env(env, key_env or DEFAULT_KEY_ENV[spec.provider]))
    if spec.provider == "bedrock":
        region_source = f"{where}.region"
        if region is None:
            region_source = "AWS_REGION" if env.raw("AWS_REGION") else "AWS_DEFAULT_REGION"
            region = env.raw("AWS_REGION") or env.raw("AWS_DEFAULT_REGION")
        if region is None:
            raise SettingsError("AWS_REGION", "must be set for a bedrock route")
        if not _REGION.fullmatch(region):
            raise SettingsError(region_source, f"{region!r} is not an AWS region name")
    return replace(spec, base_url=base_url, credentials=credentials, region=region)


def _key_from_env(env: EnvReader, name: str) -> KeySource:
    value = env.raw(name)
    return KeySource(name, Secret(value) if value else None, f"set {name}")


def key_from_file(path: str) -> KeySource:
    """The key in `path`. A file that cannot be read is a missing key, as an unset variable
    is: the route starts unusable and `/ready` names the file and why (never its content).
    So is one with whitespace or control characters inside the key (two keys on two lines,
    say), which no vendor takes and no HTTP header may carry."""
    description = f"the file {path}"
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:  # before ValueError: it is one
        return KeySource(description, None, f"cannot read {path}: not UTF-8 text", path)
    except (OSError, ValueError) as exc:  # missing, a directory, no permission, a NUL in it
        reason = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
        return KeySource(description, None, f"cannot read {path}: {reason}", path)
    if not value:
        return KeySource(description, None, f"{path} is empty", path)
    if any(char.isspace() or not char.isprintable() for char in value):
        return KeySource(description, None, f"{path} holds more than one key, or whitespace "
                                            "or control characters inside the key", path)
    return KeySource(description, Secret(value), f"{path} is empty", path)


def _text(entry: Mapping[str, object], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"{where}.{key}", "must be a non-empty string")
    return value.strip()
