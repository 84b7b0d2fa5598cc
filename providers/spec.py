"""Route names (`provider/model`) and each route's settings, as the adapters take them."""

from __future__ import annotations

from dataclasses import dataclass

from providers.credentials import KeySource

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route of the chain, as configured.

    `credentials` is the key for OpenAI and Anthropic routes, resolved at start-up from the
    configured source; Bedrock uses the AWS credential chain and the demo needs none.
    `timeout_s` bounds each wait on the vendor for the first byte or between chunks, and
    `connect_timeout_s` the connecting, so a hung upstream becomes a retryable error instead
    of a hung answer.
    """

    provider: str
    model: str
    base_url: str | None = None
    credentials: KeySource | None = None
    max_tokens: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    region: str | None = None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_rpm: int | None = None  # how many requests a minute this route may take as a fallback
    aliases: tuple[str, ...] = ()  # other names clients may ask for it by (`model`)

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"

    def output_cap(self, requested: int) -> int:
        """The request's (already clamped) token cap, lowered to this route's own if it has one."""
        return min(requested, self.max_tokens) if self.max_tokens else requested


def missing_key(spec: RouteSpec) -> str:
    """What to tell an operator whose route has no key: where it was looked for."""
    remedy = spec.credentials.remedy if spec.credentials else "configure the provider's key"
    return f"no API key: {remedy}"


PROVIDER_KINDS: tuple[str, ...] = ("demo", "openai", "anthropic", "bedrock")
DEFAULT_MODELS: dict[str, str] = {
    "demo": "hello-1",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "bedrock": "anthropic.claude-3-5-haiku-20241022-v1:0",
}
# The env var each keyed vendor's key is read from unless a route names another.
DEFAULT_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
# The vendors' own variables for pointing their SDK at another server.
BASE_URL_ENV: dict[str, str] = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "bedrock": "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
}


def parse_route(text: str, default_provider: str) -> RouteSpec:
    """`model` or `provider/model`; raises ValueError with a reason a user can act on.

    Only the first `/` separates: Bedrock and OpenAI-compatible model ids may contain more.
    """
    text = text.strip()
    provider, sep, model = text.partition("/")
    if not sep:
        provider, model = default_provider, text
    if provider not in PROVIDER_KINDS:
        raise ValueError(
            f"unknown provider {provider!r}; available: {', '.join(PROVIDER_KINDS)}"
            f" (a model id with a slash is written provider/model, e.g. openai/{text})")
    if not model or any(c.isspace() for c in model):
        raise ValueError(f"{text!r} is not a model name")
    return RouteSpec(provider, model)

