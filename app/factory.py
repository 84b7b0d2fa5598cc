"""Building the ASGI application from settings."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from app import cache_admin, metrics, openai_routes, page, routes, stream_routes, usage
from app.errors import (
    ApiError,
    handle_api_error,
    handle_http_exception,
    handle_unexpected,
)
from app.guardrails import Guardrails
from app.lifecycle import Lifecycle
from app.middleware import EdgeMiddleware
from app.reload import ConfigReloader
from app.request_metrics import counting_rejections
from app.service import ChatService
from cache.answers import AnswerCache
from cache.redis_store import RedisAnswers
from cache.store import AnswerStore, MemoryAnswers
from config.chain import build_chain
from config.settings import Settings
from providers.base import Provider
from providers.embeddings import build_embedder
from providers.registry import ProviderOptions, build_provider
from quota.ledger import QuotaStore
from quota.memory_store import MemoryStore
from quota.redis_store import RedisStore
from streaming.chain import RouteChain
from streaming.headroom_mirror import HeadroomMirror
from streaming.readiness import FIRST_ROUND_WAIT_S, RouteChecks
from streaming.replay import AnswerLogs, MemoryReplay
from streaming.replay_mirror import MirroredReplay
from streaming.replay_redis import RedisReplay
from streaming.resumable import Answers
from telemetry import exposition, tracing
from telemetry.jsonlog import flush_logs
from telemetry.metrics_port import start_metrics_listener
from tenancy.admission import Gatekeeper
from tenancy.stream_tokens import StreamTokens, shared_token_key

logger = logging.getLogger("hello_ship.lifecycle")


# A stream slot is held at most this long past the request deadline, in case a replica dies
# before it frees the slot.
LEASE_MARGIN_S = 60.0


def quota_store(settings: Settings) -> QuotaStore:
    """Redis when `REDIS_URL` is set (limits shared by every replica), else this process."""
    quota = settings.quota
    lease_s = settings.retry.request_timeout_s + settings.shutdown_grace_s + LEASE_MARGIN_S
    if quota.redis_url is None:
        return MemoryStore(lease_s, quota.retention_days)
    return RedisStore(quota.redis_url, prefix=quota.redis_prefix,
                      timeout_s=quota.redis_timeout_s, lease_s=lease_s,
                      retention_days=quota.retention_days)


def create_app(settings: Settings,
               provider: Provider | Sequence[Provider] | None = None,
               store: QuotaStore | None = None,
               clock: Callable[[], float] = time.time,
               env: Mapping[str, str] | None = None) -> ASGIApp:
    """The service as an ASGI app; `provider` (or a list, a chain) replaces the configured
    routes, `store` the quota store and `clock` the wall clock budgets run on (tests,
    embedding). With `env`, the environment `settings` came from, the config file and key
    files are read again on SIGHUP and when they change (app.reload)."""
    if provider is None:
        options = ProviderOptions(demo=settings.demo)
        providers = [build_provider(spec, options) for spec in settings.routes]
    else:
        providers = list(provider) if isinstance(provider, Sequence) else [provider]
    chain = build_chain(providers, settings)
    tracing.configure(settings.tracing)

    lifecycle = Lifecycle(settings.drain_delay_s, settings.shutdown_grace_s)
    checks = RouteChecks(chain.links, settings.ready_check_s)
    store = store or quota_store(settings)
    replay = replay_store(settings)
    headroom = headroom_mirror(settings, chain)
    answers = Answers(replay, grace_s=settings.streams.resume_grace_s,
                      heartbeat_s=settings.heartbeat_s)
    stream_tokens = StreamTokens(settings.streams.token_key, settings.streams.token_ttl_s)
    gate = Gatekeeper(settings.tenancy, settings.prices,
                      [link.provider.route for link in chain.links], store,
                      settings.quota.on_store_error, settings.quota.retention_days, clock,
                      cache_hit_usd=settings.cache.hit_price_usd)
    cache = answer_cache(settings, clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        restore_signal_handlers = lifecycle.install()
        _log_access_mode(settings)
        exposition.forget_dead_workers()
        stop_metrics_listener = start_metrics_listener(settings.metrics_port,
                                                       settings.metrics_host)
        try:
            if settings.streams.token_key is None and settings.quota.redis_url is not None:
                stream_tokens.key = await shared_token_key(settings.quota.redis_url,
                                                           settings.quota.redis_prefix)
            async with anyio.create_task_group() as background:
                background.start_soon(answers.serve)
                background.start_soon(cache.run)
                background.start_soon(checks.run)
                if headroom is not None:
                    background.start_soon(headroom.run)
                if reloader is not None:
                    background.start_soon(reloader.run)
                await checks.first_round(FIRST_ROUND_WAIT_S)
                yield
                background.cancel_scope.cancel()
        finally:
            restore_signal_handlers()
            if stop_metrics_listener is not None:
                stop_metrics_listener()
            exposition.worker_exiting()
            try:
                await chain.aclose()
            except Exception:  # logged safely here, not as the server's traceback text
                logger.exception("provider_close_failed")
            try:
                await guardrails.aclose()
            except Exception:
                logger.exception("moderation_close_failed")
            try:
                await tracing.flush()  # spans still buffered for export
            except Exception:
                logger.exception("span_export_failed")
            try:
                await store.aclose()
            except Exception:
                logger.exception("limits_store_close_failed")
            try:
                await replay.aclose()
            except Exception:
                logger.exception("replay_store_close_failed")
            try:
                await cache.aclose()
            except Exception:
                logger.exception("cache_close_failed")
            try:
                if headroom is not None:
                    await headroom.aclose()
            except Exception:
                logger.exception("headroom_mirror_close_failed")
            finally:
                lifecycle.log_complete()
                flush_logs()  # the event loop is ending: write directly from now on

    app = Starlette(
        routes=[
            Route("/", page.index, methods=["GET"]),
            Route("/static/{name}", page.static, methods=["GET"]),
            Route("/health", routes.health, methods=["GET"]),
            Route("/ready", routes.ready, methods=["GET"]),
            Route("/chat", routes.chat, methods=["POST"]),
            Route("/chat/stream", stream_routes.chat_stream, methods=["POST"]),
            Route("/chat/streams", stream_routes.create_stream, methods=["POST"]),
            Route("/chat/streams/{stream_id}", stream_routes.read_stream, methods=["GET"]),
            Route("/chat/streams/{stream_id}", stream_routes.stop_stream, methods=["DELETE"]),
            Route("/v1/chat/completions", openai_routes.chat_completions, methods=["POST"]),
            Route("/v1/models", openai_routes.models, methods=["GET"]),
            Route("/usage", usage.own_usage, methods=["GET"]),
            Route("/admin/usage/{tenant}", usage.tenant_usage, methods=["GET"]),
            Route("/admin/cache/{tenant}", cache_admin.clear_tenant_cache, methods=["DELETE"]),
            Route("/metrics", metrics.metrics, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: counting_rejections(handle_api_error),
            HTTPException: handle_http_exception,
            Exception: counting_rejections(handle_unexpected),
        },
        lifespan=lifespan,
    )
    guardrails = Guardrails(settings.guard)
    app.state.service = ChatService(settings, chain, guardrails, cache)
    reloader = None if env is None else ConfigReloader(env, settings, app.state.service, gate,
                                                       chain, checks)
    app.state.guardrails = guardrails
    app.state.lifecycle = lifecycle
    app.state.checks = checks
    app.state.gate = gate
    app.state.answers = answers
    app.state.stream_tokens = stream_tokens
    edge: ASGIApp = EdgeMiddleware(app, settings.trusted_proxies)
    if settings.streams.cors_origins:
        # Outermost, so a preflight is answered before anything else and every answer,
        # errors included, carries the headers a browser on those origins needs.
        edge = CORSMiddleware(edge, allow_origins=list(settings.streams.cors_origins),
                              allow_methods=["GET", "POST", "DELETE"],
                              allow_headers=["Authorization", "Content-Type", "Last-Event-ID",
                                             "X-Request-ID", "traceparent"],
                              expose_headers=["X-Request-ID"], max_age=600)
    return edge


def answer_cache(settings: Settings, clock: Callable[[], float] = time.time) -> AnswerCache:
    """The answer cache: in Redis when `REDIS_URL` is set (replicas share entries), else in
    this process; near-duplicates by embeddings when `CACHE_EMBEDDING_MODEL` is set."""
    options, quota = settings.cache.options, settings.quota
    store: AnswerStore
    if quota.redis_url is None:
        store = MemoryAnswers(options.max_entries, options.ttl_s, clock)
    else:
        store = RedisAnswers(quota.redis_url, prefix=quota.redis_prefix,
                             timeout_s=quota.redis_timeout_s, ttl_s=options.ttl_s,
                             max_entries=options.max_entries)
    spec = settings.cache.embedding
    embedder = None if spec is None else build_embedder(spec, settings.cache.embedding_dimensions)
    return AnswerCache(options, store, embedder, clock)


def headroom_mirror(settings: Settings, chain: RouteChain) -> HeadroomMirror | None:
    """With Redis, the routes' quota headroom shared by the replicas."""
    headrooms = [link.headroom for link in chain.links if link.headroom is not None]
    if settings.quota.redis_url is None or not headrooms:
        return None
    return HeadroomMirror(settings.quota.redis_url, headrooms,
                          prefix=settings.quota.redis_prefix,
                          timeout_s=settings.quota.redis_timeout_s)


def replay_store(settings: Settings) -> AnswerLogs:
    """Where streamed answers keep their frames for resuming: this process, mirrored to Redis
    when `REDIS_URL` is set (a reconnect may land on any replica)."""
    streams, quota = settings.streams, settings.quota
    local = MemoryReplay(streams.max_frames)
    if quota.redis_url is None:
        return local
    return MirroredReplay(local, RedisReplay(
        quota.redis_url, prefix=quota.redis_prefix, timeout_s=quota.redis_timeout_s,
        max_frames=streams.max_frames))


def _log_access_mode(settings: Settings) -> None:
    tenancy = settings.tenancy
    backend = settings.quota.backend
    if tenancy.open_mode:
        logger.warning("open_mode", extra={
            "detail": "no API keys configured: every caller is the 'anonymous' tenant",
            "limits_backend": backend})
    else:
        logger.info("tenants_configured", extra={
            "tenants": len(tenancy.policies), "keys": len(tenancy.keys),
            "admin_keys": len(tenancy.admin_keys), "limits_backend": backend})
