"""Closing a provider stream safely, from wherever it has to be closed."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

import anyio

logger = logging.getLogger("hello_ship.pipeline")

UPSTREAM_CLOSE_TIMEOUT_S = 5.0


async def close_upstream(events: AsyncGenerator[object, None], route: str) -> None:
    """Close the provider stream even when the caller was cancelled, within a bound.

    A cancelled scope would interrupt every await of the adapter's cleanup, so a stream cut
    while it waited at a `yield` could not release its upstream response. A failing cleanup is
    logged, never allowed to replace what really ended the stream.
    """
    with anyio.move_on_after(UPSTREAM_CLOSE_TIMEOUT_S, shield=True):
        try:
            await events.aclose()
        except Exception:
            logger.exception("provider_close_failed", extra={"route": route})
