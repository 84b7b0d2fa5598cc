"""Service settings, read once from the environment into a frozen object and validated.

Every limit has a safe default. A bad value stops start-up with one `SettingsError` line naming
the variable, so a typo fails the deploy instead of the first request.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NoReturn
from urllib.parse import urlsplit

from config.cache import CacheSettings, read_cache
from config.connections import (
    ConnectionLimits,
    IPNetwork,
    read_connection_limits,
    read_trusted_proxies,
)
from config.env import EnvReader, SettingsError
from config.file import load_config_file
from config.guard import GuardSettings, read_guard
from config.models import ModelCatalog, build_catalog, check_tenant_models
from config.routes import read_routes
from config.streams import StreamSettings, read_stream_settings
from config.tenants import read_prices, read_tenancy
from config.tracing import read_tracing
from providers.demo import DemoConfig
from providers.spec import DEFAULT_MODELS, RouteSpec
from quota.prices import FREE, Price
from streaming.chain import RetryPolicy
from streaming.failures import ERROR_COPY
from telemetry.spans import TracingSettings
from tenancy.admission import StorePolicy
from tenancy.identity import Tenancy, is_loopback

DEGRADED_MESSAGE = ERROR_COPY["provider_unavailable"][0]

__all__ = ["Settings", "SettingsError"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_prefix: str = "hello-ship"
    redis_timeout_s: float = 0.5
    on_store_error: StorePolicy = "closed"
    retention_days: int = 35

    @property
    def backend(self) -> str:
        """Where limits and budgets are kept, as the logs name it."""
        return "redis" if self.redis_url else "memory"


def _default_tenancy() -> Tenancy:
    return read_tenancy(EnvReader({}), {}, max_output_tokens=1024)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    routes: tuple[RouteSpec, ...] = (RouteSpec("demo", DEFAULT_MODELS["demo"]),)
    max_output_tokens: int = 1024
    max_input_chars: int = 32_000
    max_messages: int = 64
    max_body_bytes: int = 1_048_576
    heartbeat_s: float = 15.0
    sse_retry_ms: int = 3000
    shutdown_grace_s: float = 10.0
    drain_delay_s: float = 0.0
    ready_check_s: float = 30.0
    retry: RetryPolicy = RetryPolicy()
    idle_timeout_s: float = 30.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    degraded_message: str = DEGRADED_MESSAGE
    fallback_alert_share: float = 0.5
    disabled_routes: frozenset[str] = frozenset()
    prompt_version: str = "unversioned"
    system_prompt: str = ""
    log_level: str = "INFO"
    # Keys the hashes of user text in logs; random per process unless set, so such hashes
    # then only correlate lines of one process.
    log_hash_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    demo: DemoConfig = DemoConfig()
    tenancy: Tenancy = field(default_factory=_default_tenancy)
    # What `model` may name on /v1/chat/completions (config.models)
    models: ModelCatalog = field(
        default_factory=lambda: build_catalog((RouteSpec("demo", DEFAULT_MODELS["demo"]),)))
    prices: Mapping[str, Price] = field(
        default_factory=lambda: {f"demo/{DEFAULT_MODELS['demo']}": FREE})
    quota: QuotaSettings = QuotaSettings()
    guard: GuardSettings = GuardSettings()
    tracing: TracingSettings = TracingSettings()
    metrics_port: int | None = None  # /metrics on its own listener instead of PORT
    metrics_host: str = "127.0.0.1"
    connections: ConnectionLimits = ConnectionLimits()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    streams: StreamSettings = field(default_factory=StreamSettings)
    # How often the config file and key files are checked for changes (0: only on SIGHUP)
    config_watch_s: float = 5.0
    cache: CacheSettings = field(default_factory=CacheSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return _read(EnvReader(env))

    @property
    def route(self) -> RouteSpec:
        """The route that answers: the first of the chain."""
        return self.routes[0]


def load_settings_or_exit(env: Mapping[str, str]) -> Settings:
    """Settings from `env`, or one clear line on stderr and exit status 2."""
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        exit_with(exc)


def exit_with(exc: SettingsError) -> NoReturn:
    """A bad setting stops start-up: one clear line on stderr, exit status 2."""
    sys.stderr.write(f"hello-ship: {exc}\n")  # before logging exists: a plain line
    raise SystemExit(2) from None


def _read(env: EnvReader) -> Settings:
    config = load_config_file(env)
    connect_timeout_s = env.number("CONNECT_TIMEOUT_S", 5.0, float, 0.1, 600.0)
    fallback_max_rpm = env.number("FALLBACK_MAX_RPM", 0, int, 0, 1_000_000) or None
    routes = tuple(
        replace(route, connect_timeout_s=connect_timeout_s,
                max_rpm=route.max_rpm or (fallback_max_rpm if index else None))
        for index, route in enumerate(read_routes(env, config)))
    hash_key = env.raw("LOG_HASH_KEY")
    if hash_key is not None and len(hash_key) < 32:
        raise SettingsError("LOG_HASH_KEY", "must be a secret of at least 32 characters")
    fail_after = env.number("DEMO_FAIL_AFTER_TOKENS", -1, int, -1, 1_000_000)
    max_output_tokens = env.number("MAX_OUTPUT_TOKENS", 1024, int, 1, 1_000_000)
    tenancy = replace(read_tenancy(env, config, max_output_tokens),
                      open_mode_anywhere=_flag(env, "ALLOW_OPEN_MODE"))
    models = build_catalog(routes)
    check_tenant_models(tenancy, models)
    host = env.text("HOST", "127.0.0.1")
    port = env.number("PORT", 8080, int, 0, 65535)
    if tenancy.open_mode and not is_loopback(host) and not tenancy.open_mode_anywhere:
        raise SettingsError("HOST", f"no API keys are configured (open mode), so {host} would "
                                    "serve anyone; configure [tenants] keys, bind 127.0.0.1, "
                                    "or set ALLOW_OPEN_MODE=true")
    ttft_timeout_s = env.number("TTFT_TIMEOUT_S", 30.0, float, 0.1, 3600.0)
    return Settings(
        host=host,
        port=port,
        routes=routes,
        max_output_tokens=max_output_tokens,
        max_input_chars=env.number("MAX_INPUT_CHARS", 32_000, int, 1, 10_000_000),
        max_messages=env.number("MAX_MESSAGES", 64, int, 1, 10_000),
        max_body_bytes=env.number("MAX_BODY_BYTES", 1_048_576, int, 1024, 100 * 2**20),
        heartbeat_s=env.number("HEARTBEAT_S", 15.0, float, 0.01, 3600.0),
        sse_retry_ms=env.number("SSE_RETRY_MS", 3000, int, 0, 3_600_000),
        shutdown_grace_s=env.number("SHUTDOWN_GRACE_S", 10.0, float, 0.0, 3600.0),
        drain_delay_s=env.number("DRAIN_DELAY_S", 0.0, float, 0.0, 3600.0),
        ready_check_s=env.number("READY_CHECK_S", 30.0, float, 0.5, 3600.0),
        retry=RetryPolicy(
            max_attempts=env.number("MAX_ATTEMPTS", 3, int, 1, 10),
            base_s=env.number("RETRY_BASE_S", 0.5, float, 0.0, 60.0),
            cap_s=env.number("RETRY_MAX_S", 8.0, float, 0.0, 600.0),
            ttft_timeout_s=ttft_timeout_s,
            request_timeout_s=env.number("REQUEST_TIMEOUT_S", 120.0, float, 0.5, 86_400.0),
            headroom_fallback_at=env.number("HEADROOM_FALLBACK_AT", 0.0, float, 0.0, 1.0)
            or None,
            hedge_after_s=_hedge_after_s(env, ttft_timeout_s),
        ),
        idle_timeout_s=env.number("IDLE_TIMEOUT_S", 30.0, float, 0.1, 3600.0),
        breaker_failures=env.number("BREAKER_FAILURES", 5, int, 1, 1000),
        breaker_cooldown_s=env.number("BREAKER_COOLDOWN_S", 30.0, float, 0.1, 3600.0),
        degraded_message=env.raw("DEGRADED_MESSAGE") or DEGRADED_MESSAGE,
        fallback_alert_share=env.number("FALLBACK_ALERT_SHARE", 0.5, float, 0.0, 1.0),
        disabled_routes=_disabled_routes(env, routes),
        prompt_version=env.text("PROMPT_VERSION", "unversioned"),
        system_prompt=env.raw("SYSTEM_PROMPT") or "",
        log_level=env.choice("LOG_LEVEL", "INFO", LOG_LEVELS),
        log_hash_key=hash_key.encode() if hash_key else secrets.token_bytes(32),
        demo=DemoConfig(
            ttft_s=env.number("DEMO_TTFT_MS", 300.0, float, 0.0, 600_000.0) / 1000,
            token_delay_s=env.number("DEMO_TOKEN_DELAY_MS", 30.0, float, 0.0, 60_000.0) / 1000,
            answer_tokens=env.number("DEMO_ANSWER_TOKENS", 60, int, 1, 1_000_000),
            fail_after_tokens=None if fail_after < 0 else fail_after,
            fail_status=env.number("DEMO_FAIL_STATUS", 503, int, 400, 599),
        ),
        tenancy=tenancy,
        models=models,
        prices=read_prices(config, routes, tenancy),
        quota=QuotaSettings(
            redis_url=_redis_url(env),
            redis_prefix=env.text("REDIS_KEY_PREFIX", "hello-ship"),
            redis_timeout_s=env.number("REDIS_TIMEOUT_S", 0.5, float, 0.01, 30.0),
            on_store_error="open" if env.choice(
                "LIMITS_ON_REDIS_ERROR", "closed", ("open", "closed")) == "open" else "closed",
            retention_days=env.number("USAGE_RETENTION_DAYS", 35, int, 1, 400),
        ),
        guard=read_guard(env, config),
        tracing=read_tracing(env),
        metrics_port=_metrics_port(env, port),
        metrics_host=env.text("METRICS_HOST", "127.0.0.1"),
        connections=read_connection_limits(env),
        trusted_proxies=read_trusted_proxies(env),
        streams=read_stream_settings(env),
        config_watch_s=env.number("CONFIG_WATCH_S", 5.0, float, 0.0, 3600.0),
        cache=read_cache(env),
    )


def _hedge_after_s(env: EnvReader, ttft_timeout_s: float) -> float | None:
    """`HEDGE_AFTER_MS`: how long a route may stay silent before the next one is asked beside
    it; 0 (the default) never. At or past `TTFT_TIMEOUT_S` the route's own timeout would always
    come first, so such a value is a mistake, not a setting."""
    after_ms = env.number("HEDGE_AFTER_MS", 0, int, 0, 3_600_000)
    if after_ms and after_ms >= ttft_timeout_s * 1000:
        raise SettingsError("HEDGE_AFTER_MS", f"must be below TTFT_TIMEOUT_S "
                                              f"({ttft_timeout_s * 1000:g} ms), got {after_ms}")
    return after_ms / 1000 if after_ms else None


def _metrics_port(env: EnvReader, service_port: int) -> int | None:
    port = env.number("METRICS_PORT", -1, int, 0, 65535)
    if port < 0:
        return None
    if port and port == service_port:
        raise SettingsError("METRICS_PORT", "must differ from PORT")
    return port


def _flag(env: EnvReader, name: str) -> bool:
    return env.choice(name, "false", ("true", "false", "1", "0")) in ("true", "1")


def _redis_url(env: EnvReader) -> str | None:
    url = env.raw("REDIS_URL")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("redis", "rediss", "unix"):
        # Not repeated: the URL may hold a password.
        raise SettingsError("REDIS_URL", "must be a redis://host:port/db, rediss:// or "
                                         "unix:// URL")
    return url


def _disabled_routes(env: EnvReader, routes: tuple[RouteSpec, ...]) -> frozenset[str]:
    """`DISABLED_ROUTES`: routes of the chain to skip, e.g. for a fallback drill."""
    raw = env.raw("DISABLED_ROUTES")
    if raw is None:
        return frozenset()
    names = {name.strip() for name in raw.split(",") if name.strip()}
    known = {route.name for route in routes}
    unknown = sorted(names - known)
    if unknown:
        raise SettingsError("DISABLED_ROUTES", f"{unknown[0]!r} is not a route of the chain "
                                               f"({', '.join(sorted(known))})")
    return frozenset(names)
