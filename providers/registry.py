"""Building the adapter for a route: the one place that knows every provider kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from providers.base import Provider
from providers.demo import DemoConfig, DemoProvider
from providers.spec import RouteSpec


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Per-kind settings the factories need; each kind reads only its own."""

    demo: DemoConfig = DemoConfig()


def _demo(spec: RouteSpec, options: ProviderOptions) -> Provider:
    return DemoProvider(spec.model, options.demo, max_tokens=spec.max_tokens)


# The vendor SDKs are imported only when a route uses them: the demo starts without them.
def _openai(spec: RouteSpec, options: ProviderOptions) -> Provider:
    from providers.openai_chat import OpenAIChatProvider

    return OpenAIChatProvider(spec)


def _anthropic(spec: RouteSpec, options: ProviderOptions) -> Provider:
    from providers.anthropic_messages import AnthropicMessagesProvider

    return AnthropicMessagesProvider(spec)


def _bedrock(spec: RouteSpec, options: ProviderOptions) -> Provider:
    from providers.bedrock_converse import BedrockConverseProvider

    return BedrockConverseProvider(spec)


_FACTORIES: dict[str, Callable[[RouteSpec, ProviderOptions], Provider]] = {
    "demo": _demo,
    "openai": _openai,
    "anthropic": _anthropic,
    "bedrock": _bedrock,
}


def build_provider(spec: RouteSpec, options: ProviderOptions) -> Provider:
    return _FACTORIES[spec.provider](spec, options)
