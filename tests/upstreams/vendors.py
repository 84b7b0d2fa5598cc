"""The four kinds of upstream route under test, each with its fake server and route spec."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

from providers.credentials import KeySource, Secret
from providers.spec import RouteSpec
from tests.upstreams.anthropic_wire import anthropic_upstream
from tests.upstreams.bedrock_wire import bedrock_upstream
from tests.upstreams.common import Upstream
from tests.upstreams.openai_wire import openai_upstream

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKETEST00000001",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-access-key-0123456789",
    "AWS_REGION": "us-east-1",
    # No instance-metadata lookups from a test machine.
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class Vendor:
    name: str
    provider: str
    model: str
    upstream: Callable[[], AbstractContextManager[Upstream]]
    base_path: str  # appended to the fake's URL to make the SDK's base URL
    unavailable_status: int  # the vendor's usual "overloaded" status
    auth_status: int  # what a bad credential gets
    length_finish: str  # the vendor's stop reason for hitting max tokens
    env_prefix: str | None  # OPENAI / ANTHROPIC for the keyed vendors

    def spec(self, upstream: Upstream, **changes: object) -> RouteSpec:
        credentials = None
        if self.env_prefix is not None:
            variable = f"{self.env_prefix}_API_KEY"
            credentials = KeySource(variable, Secret(upstream.api_key), f"set {variable}")
        spec = RouteSpec(self.provider, self.model, base_url=upstream.url + self.base_path,
                         credentials=credentials, timeout_s=5.0,
                         region="us-east-1" if self.provider == "bedrock" else None)
        return replace(spec, **changes)  # type: ignore[arg-type]

    def env(self, upstream: Upstream, key: str | None = None) -> dict[str, str]:
        """The environment a user sets to point the service at this upstream."""
        if self.provider == "bedrock":
            return {**AWS_TEST_ENV, "LLM_PROVIDER": "bedrock", "PRIMARY_MODEL": self.model,
                    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": upstream.url}
        assert self.env_prefix is not None
        # A model id with a slash needs its provider spelled out: `openai/org/model`.
        primary = f"{self.provider}/{self.model}" if "/" in self.model else self.model
        return {"LLM_PROVIDER": self.provider, "PRIMARY_MODEL": primary,
                f"{self.env_prefix}_BASE_URL": upstream.url + self.base_path,
                f"{self.env_prefix}_API_KEY": key if key is not None else upstream.api_key}


OPENAI = Vendor("openai", "openai", "gpt-4o-mini", openai_upstream, "/v1", 503, 401,
                "length", "OPENAI")
# An OpenAI-compatible server (vLLM, Ollama, LiteLLM) serving a model id with a slash.
OPENAI_COMPATIBLE = Vendor("openai-compatible", "openai", "meta-llama/Llama-3.1-8B-Instruct",
                           openai_upstream, "/v1", 503, 401, "length", "OPENAI")
ANTHROPIC = Vendor("anthropic", "anthropic", "claude-3-5-haiku-20241022", anthropic_upstream,
                   "", 529, 401, "max_tokens", "ANTHROPIC")
BEDROCK = Vendor("bedrock", "bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0",
                 bedrock_upstream, "", 503, 403, "max_tokens", None)

VENDORS = (OPENAI, OPENAI_COMPATIBLE, ANTHROPIC, BEDROCK)


def vendor_ids() -> Iterator[str]:
    return (vendor.name for vendor in VENDORS)
