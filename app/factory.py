"""Building the ASGI application from settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp

from app import routes
from app.chain_setup import build_chain
from app.errors import (
    ApiError,
    handle_api_error,
    handle_http_exception,
    handle_unexpected,
)
from app.jsonlog import flush_logs
from app.lifecycle import Lifecycle
from app.middleware import EdgeMiddleware
from app.readiness import FIRST_ROUND_WAIT_S, RouteChecks
from app.service import ChatService
from app.settings import Settings
from providers.base import Provider
from providers.routes import ProviderOptions, build_provider

logger = logging.getLogger("hello_ship.lifecycle")


def create_app(settings: Settings,
               provider: Provider | Sequence[Provider] | None = None) -> ASGIApp:
    """The service as an ASGI app; `provider` (or a list, a chain) replaces the configured
    routes (tests, embedding)."""
    if provider is None:
        options = ProviderOptions(demo=settings.demo)
        providers = [build_provider(spec, options) for spec in settings.routes]
    else:
        providers = list(provider) if isinstance(provider, Sequence) else [provider]
    chain = build_chain(providers, settings)

    lifecycle = Lifecycle(settings.drain_delay_s)
    checks = RouteChecks(chain.links, settings.ready_check_s)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        restore_signal_handlers = lifecycle.install()
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(checks.run)
                await checks.first_round(FIRST_ROUND_WAIT_S)
                yield
                background.cancel_scope.cancel()
        finally:
            restore_signal_handlers()
            try:
                await chain.aclose()
            except Exception:  # logged safely here, not as the server's traceback text
                logger.exception("provider_close_failed")
            finally:
                flush_logs()  # the event loop is ending: write directly from now on

    app = Starlette(
        routes=[
            Route("/health", routes.health, methods=["GET"]),
            Route("/ready", routes.ready, methods=["GET"]),
            Route("/chat", routes.chat, methods=["POST"]),
            Route("/chat/stream", routes.chat_stream, methods=["POST"]),
        ],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.service = ChatService(settings, chain)
    app.state.lifecycle = lifecycle
    app.state.checks = checks
    return EdgeMiddleware(app)
