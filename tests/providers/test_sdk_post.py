"""The OpenAI and Anthropic adapters send their SDK's request again (providers/sdk_post.py):
what a vendor sees, and what the adapter raises, must be the same on a client's later
requests as on its first, which the SDK built and sent itself."""

from __future__ import annotations

import ast
import subprocess
import sys

import anthropic
import pytest

from providers.credentials import KeySource, Secret
from providers.errors import ProviderError, ProviderUnavailable
from providers.registry import ProviderOptions, build_provider
from providers.types import (
    CompletionRequest,
    Finish,
    Message,
    ProviderEvent,
    Sampling,
    TextDelta,
)
from tests.providers.test_vendor_adapters import play_keeping_client
from tests.upstreams.common import Received, Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, OPENAI, Vendor

SDK_VENDORS = [pytest.param(OPENAI, id="openai"), pytest.param(ANTHROPIC, id="anthropic")]
TRACE_1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FIRST = CompletionRequest((Message("user", "Say hello."),), max_tokens=64, traceparent=TRACE_1)
LATER = CompletionRequest(
    (Message("system", "Be brief."), Message("user", "And now in French, please?")),
    max_tokens=32, traceparent=TRACE_2,
    sampling=Sampling(stop=("END",), user="user-42"))


def texts(events: list[ProviderEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


async def requests_seen(vendor: Vendor, upstream: Upstream,
                        requests: list[CompletionRequest]) -> list[Received]:
    """What the vendor saw of `requests`, sent in turn by one adapter (one SDK client)."""
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    try:
        for request in requests:
            events, error = await play_keeping_client(provider, request)
            assert error is None and texts(events) == ["Hello", ",", " world", "!"]
        return list(upstream.requests)
    finally:
        await provider.aclose()


def without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name not in names}


@pytest.mark.parametrize("vendor", SDK_VENDORS)
async def test_a_later_request_is_the_one_the_sdk_built_with_its_own_body_and_trace(
        upstream_pool: UpstreamPool, vendor: Vendor) -> None:
    upstream = upstream_pool.get(vendor)
    first, later = await requests_seen(vendor, upstream, [FIRST, LATER])
    # The SDK's headers (the key, the user agent, platform and timeout headers) again, and
    # the later request's own trace, not the first one's.
    assert later.path == first.path
    assert without(later.headers, "content-length", "traceparent") == without(
        first.headers, "content-length", "traceparent")
    assert first.headers["traceparent"] == TRACE_1 and later.headers["traceparent"] == TRACE_2
    assert int(later.headers["content-length"]) == len(later.raw)
    # The body the SDK itself sends for that request, as the first request of a new client.
    upstream.requests.clear()
    (alone,) = await requests_seen(vendor, upstream, [LATER])
    assert later.json == alone.json and later.headers == alone.headers
    assert later.client_port == first.client_port  # one pooled connection throughout


async def test_the_anthropic_body_is_the_one_messages_create_sends(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(ANTHROPIC)
    (ours,) = await requests_seen(ANTHROPIC, upstream, [LATER])
    async with anthropic.AsyncAnthropic(api_key=upstream.api_key, base_url=upstream.url,
                                        max_retries=0) as client:
        stream = await client.messages.create(
            model=ANTHROPIC.model, max_tokens=32, system="Be brief.",
            messages=[{"role": "user", "content": "And now in French, please?"}],
            stop_sequences=["END"], metadata={"user_id": "user-42"}, stream=True)
        async for _ in stream:
            pass
    assert upstream.requests[-1].raw == ours.raw


@pytest.mark.parametrize("vendor", SDK_VENDORS)
@pytest.mark.parametrize("script", [
    pytest.param(Script(status=429, retry_after="7"), id="429"),
    pytest.param(Script(status=401), id="401"),
    pytest.param(Script(status=400), id="400"),
    pytest.param(Script(status=503), id="503"),
    pytest.param(Script(hang_s=2.0), id="timeout"),
])
async def test_a_later_request_fails_as_the_first_would(
        upstream_pool: UpstreamPool, vendor: Vendor, script: Script) -> None:
    upstream = upstream_pool.get(vendor)
    spec = vendor.spec(upstream, timeout_s=0.5)
    errors: list[ProviderError | None] = []
    for warmed in (False, True):
        provider = build_provider(spec, ProviderOptions())
        try:
            if warmed:
                events, error = await play_keeping_client(provider, FIRST)
                assert error is None and events[-1] == Finish("stop")
            upstream.queue.append(script)
            events, error = await play_keeping_client(provider, LATER)
            assert texts(events) == []
            errors.append(error)
        finally:
            await provider.aclose()
    if script.hang_s:
        # Both hung requests end at the fake once it sees them gone: wait for that here, or it
        # may be recorded into the next test's outcomes on the shared fake.
        upstream.wait_for_outcomes(3)
    on_first, on_later = errors
    assert on_first is not None and on_later is not None
    assert (type(on_later), on_later.message, on_later.status_code, on_later.retry_after) == (
        type(on_first), on_first.message, on_first.status_code, on_first.retry_after)


@pytest.mark.parametrize("vendor", SDK_VENDORS)
async def test_a_later_request_to_a_vendor_gone_away_is_a_connection_failure(
        vendor: Vendor) -> None:
    with vendor.upstream() as upstream:
        provider = build_provider(vendor.spec(upstream), ProviderOptions())
        events, error = await play_keeping_client(provider, FIRST)
        assert error is None and events[-1] == Finish("stop")
    try:
        events, error = await play_keeping_client(provider, LATER)
    finally:
        await provider.aclose()
    assert type(error) is ProviderUnavailable and texts(events) == []
    assert error.message == f"{vendor.name}: connection failed"


async def test_a_rotated_key_is_sent_on_the_next_request(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    provider = build_provider(OPENAI.spec(upstream), ProviderOptions())
    try:
        assert (await play_keeping_client(provider, FIRST))[1] is None
        upstream.also_accepted.add("sk-rotated")
        provider.use_key(KeySource("OPENAI_API_KEY", Secret("sk-rotated"), "set it"))
        assert (await play_keeping_client(provider, LATER))[1] is None
        assert (await play_keeping_client(provider, LATER))[1] is None
    finally:
        await provider.aclose()
    keys = [seen.headers["authorization"] for seen in upstream.requests]
    assert keys == [f"Bearer {upstream.api_key}", "Bearer sk-rotated", "Bearer sk-rotated"]


SDK_MODULES = ("openai", "anthropic", "aioboto3", "botocore")


@pytest.mark.parametrize(("kind", "loaded"), [
    ("demo", set()), ("openai", {"openai"}), ("anthropic", {"anthropic"}),
    ("bedrock", {"aioboto3", "botocore"}),
])
def test_a_route_loads_only_its_own_vendor_sdk(kind: str, loaded: set[str]) -> None:
    # Each SDK costs the process tens of MiB (anthropic alone about 40): a service with
    # OpenAI routes only must not carry the others.
    script = (
        "import sys\n"
        "from providers.registry import ProviderOptions, build_provider\n"
        "from providers.spec import RouteSpec\n"
        f"build_provider(RouteSpec({kind!r}, 'some-model', region='us-east-1'), "
        "ProviderOptions())\n"
        f"print(sorted(name for name in {SDK_MODULES!r} if name in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=60)
    assert set(ast.literal_eval(result.stdout.strip())) == loaded
