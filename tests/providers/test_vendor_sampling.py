"""The caller's sampling, as each vendor's fake receives it through the vendor's own SDK."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from providers.errors import ProviderError
from providers.registry import ProviderOptions, build_provider
from providers.types import CompletionRequest, Finish, Message, ProviderEvent, Sampling
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import (
    ANTHROPIC,
    AWS_TEST_ENV,
    BEDROCK,
    OPENAI,
    OPENAI_COMPATIBLE,
    VENDORS,
    Vendor,
)

MESSAGES = (Message("system", "Answer briefly."), Message("user", "Say hello."))
EVERY_FIELD = Sampling(temperature=0.7, top_p=0.9, stop=("\n\n", "END"), seed=42,
                       user="user-7f3a")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)


async def sent_body(vendor: Vendor, upstream_pool: UpstreamPool,
                    sampling: Sampling | None = None) -> dict[str, Any]:
    """The JSON body the vendor's fake received for one answered request."""
    upstream = upstream_pool.get(vendor)
    request = CompletionRequest(messages=MESSAGES, max_tokens=64)
    if sampling is not None:
        request = CompletionRequest(messages=MESSAGES, max_tokens=64, sampling=sampling)
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    events: list[ProviderEvent] = []
    try:
        events = [event async for event in provider.stream(request)]
    except ProviderError as error:  # the fake refused the body: show what it said
        pytest.fail(f"{vendor.name} refused the request: {error.message}")
    finally:
        await provider.aclose()
    assert events[-1] == Finish("stop")
    body: dict[str, Any] = upstream.last.json
    return body


@pytest.mark.parametrize("vendor", [OPENAI, OPENAI_COMPATIBLE], ids=lambda vendor: vendor.name)
async def test_openai_receives_every_sampling_field_under_its_own_name(
        vendor: Vendor, upstream_pool: UpstreamPool) -> None:
    body = await sent_body(vendor, upstream_pool, EVERY_FIELD)
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["stop"] == ["\n\n", "END"]
    assert body["seed"] == 42 and body["user"] == "user-7f3a"


async def test_openai_takes_a_temperature_up_to_two_as_it_is(
        upstream_pool: UpstreamPool) -> None:
    body = await sent_body(OPENAI, upstream_pool, Sampling(temperature=1.5))
    assert body["temperature"] == 1.5


async def test_anthropic_receives_stop_sequences_and_the_user_but_no_temperature(
        upstream_pool: UpstreamPool) -> None:
    """API version 2026-10-21 (what the SDK sends) refuses temperature and top_p with a 400,
    as the fake does: they are left out, and the answer still comes."""
    body = await sent_body(ANTHROPIC, upstream_pool,
                           Sampling(temperature=1.5, top_p=0.9, stop=("\n\n", "END"), seed=42,
                                    user="user-7f3a"))
    assert body["stop_sequences"] == ["\n\n", "END"]
    assert body["metadata"] == {"user_id": "user-7f3a"}
    assert not {"temperature", "top_p", "top_k", "seed", "user"} & body.keys()


async def test_the_anthropic_fake_refuses_temperature_as_the_api_version_does(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(ANTHROPIC)
    async with anthropic.AsyncAnthropic(api_key=upstream.api_key, base_url=upstream.url,
                                        max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError, match="temperature: Extra inputs"):
            await client.messages.create(
                model=ANTHROPIC.model, max_tokens=64,
                messages=[{"role": "user", "content": "Say hello."}],
                extra_body={"temperature": 1.0})


async def test_bedrock_receives_temperature_top_p_and_stop_in_the_inference_config(
        upstream_pool: UpstreamPool) -> None:
    body = await sent_body(BEDROCK, upstream_pool, EVERY_FIELD)
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.7, "topP": 0.9,
                                       "stopSequences": ["\n\n", "END"]}
    # Converse has no seed and no end-user field.
    assert "42" not in str(body) and "user-7f3a" not in str(body)


async def test_a_temperature_above_one_reaches_bedrock_as_one(
        upstream_pool: UpstreamPool) -> None:
    body = await sent_body(BEDROCK, upstream_pool, Sampling(temperature=1.5))
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 1.0}


# Every key of each vendor's body when the caller sets no sampling: exactly what was sent
# before sampling existed.
DEFAULT_BODY_KEYS = {
    "openai": {"model", "messages", "stream", "stream_options", "max_tokens"},
    "openai-compatible": {"model", "messages", "stream", "stream_options", "max_tokens"},
    "anthropic": {"model", "max_tokens", "messages", "system", "stream"},
    "bedrock": {"messages", "system", "inferenceConfig"},
}


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda vendor: vendor.name)
@pytest.mark.parametrize("sampling", [None, Sampling()], ids=["unset", "all-default"])
async def test_default_sampling_sends_no_sampling_field(
        vendor: Vendor, upstream_pool: UpstreamPool, sampling: Sampling | None) -> None:
    body = await sent_body(vendor, upstream_pool, sampling)
    assert body.keys() == DEFAULT_BODY_KEYS[vendor.name]
    if vendor is BEDROCK:
        assert body["inferenceConfig"] == {"maxTokens": 64}
