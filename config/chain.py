"""The route chain from settings: a breaker per route, caps on the fallbacks."""

from __future__ import annotations

from collections.abc import Sequence

from config.settings import Settings
from providers.base import Provider
from providers.headroom import Headroom
from streaming.breaker import CircuitBreaker
from streaming.chain import ChainLink, RouteChain
from streaming.fallback_budget import RateCap


def build_chain(providers: Sequence[Provider], settings: Settings) -> RouteChain:
    links = []
    for index, provider in enumerate(providers):
        spec = settings.routes[index] if index < len(settings.routes) else None
        links.append(ChainLink(
            provider=provider,
            breaker=CircuitBreaker(provider.route, settings.breaker_failures,
                                   settings.breaker_cooldown_s),
            cap=RateCap(spec.max_rpm if spec and index else None),
            tier="primary" if index == 0 else "fallback",
            disabled=provider.route in settings.disabled_routes,
            headroom=_headroom(provider),
        ))
    return RouteChain(links, settings.retry)


def _headroom(provider: Provider) -> Headroom | None:
    """The vendor's quota, from the adapters that read its rate-limit headers."""
    headroom = getattr(provider, "headroom", None)
    return headroom if isinstance(headroom, Headroom) else None
