"""Route names (`provider/model`) and building a provider for one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from providers.base import Provider
from providers.demo import DemoConfig, DemoProvider


@dataclass(frozen=True, slots=True)
class RouteSpec:
    provider: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Per-kind settings the factories need; each kind reads only its own."""

    demo: DemoConfig = DemoConfig()


_FACTORIES: dict[str, Callable[[RouteSpec, ProviderOptions], Provider]] = {
    "demo": lambda spec, options: DemoProvider(spec.model, options.demo),
}

PROVIDER_KINDS: tuple[str, ...] = tuple(_FACTORIES)
DEFAULT_MODELS: dict[str, str] = {"demo": "hello-1"}


def parse_route(text: str, default_provider: str) -> RouteSpec:
    """`model` or `provider/model`; raises ValueError with a reason a user can act on."""
    text = text.strip()
    provider, sep, model = text.partition("/")
    if not sep:
        provider, model = default_provider, text
    if provider not in _FACTORIES:
        raise ValueError(f"unknown provider {provider!r}; available: {', '.join(PROVIDER_KINDS)}")
    if not model or any(c.isspace() for c in model):
        raise ValueError(f"{text!r} is not a model name")
    return RouteSpec(provider, model)


def build_provider(spec: RouteSpec, options: ProviderOptions) -> Provider:
    return _FACTORIES[spec.provider](spec, options)
