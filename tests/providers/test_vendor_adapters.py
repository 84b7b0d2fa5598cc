"""Each vendor adapter, driven by its official SDK against a fake speaking the vendor's wire."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncGenerator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import anthropic
import anyio
import botocore.exceptions
import openai
import pytest
from botocore.eventstream import ParserError
from botocore.parsers import ResponseParserError

from providers import anthropic_messages, bedrock_converse, bedrock_runtime, openai_chat
from providers.base import Provider
from providers.credentials import KeySource
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.registry import ProviderOptions, build_provider
from providers.spec import RouteSpec
from providers.types import (
    CompletionRequest,
    Finish,
    Message,
    ProviderEvent,
    RouteHealth,
    TextDelta,
    Usage,
)
from tests.upstreams import anthropic_wire, bedrock_wire, openai_wire
from tests.upstreams.common import Script, Upstream
from tests.upstreams.eventstream import encode_message
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import (
    ANTHROPIC,
    AWS_TEST_ENV,
    BEDROCK,
    OPENAI,
    OPENAI_COMPATIBLE,
    Vendor,
)

REQUEST = CompletionRequest(
    messages=(Message("system", "Answer briefly."), Message("user", "Say hello.")),
    max_tokens=64,
)




async def play(provider: Provider, request: CompletionRequest = REQUEST
               ) -> tuple[list[ProviderEvent], ProviderError | None]:
    """Stream one answer, then close the provider's client."""
    try:
        return await play_keeping_client(provider, request)
    finally:
        await provider.aclose()


def texts(events: list[ProviderEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


async def test_streams_the_text_with_the_vendors_own_usage(vendor: Vendor,
                                                           upstream: Upstream) -> None:
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    assert provider.route == f"{vendor.provider}/{vendor.model}"
    events, error = await play(provider)
    assert error is None
    assert texts(events) == ["Hello", ",", " world", "!"]
    # 17 and 9 are the fake's billing numbers, not anything the service could count itself.
    assert Usage(input_tokens=17, output_tokens=9) in events
    assert events[-1] == Finish("stop")
    assert upstream.outcomes == ["completed"]


async def test_hitting_max_tokens_finishes_with_length(vendor: Vendor,
                                                       upstream: Upstream) -> None:
    upstream.script = Script(finish=vendor.length_finish)
    events, error = await play(build_provider(vendor.spec(upstream), ProviderOptions()))
    assert error is None and events[-1] == Finish("length")


async def test_a_route_max_tokens_lowers_the_requested_cap(vendor: Vendor,
                                                           upstream: Upstream) -> None:
    await play(build_provider(vendor.spec(upstream, max_tokens=20), ProviderOptions()))
    body = upstream.last.json
    sent = (body.get("max_tokens") or body.get("max_completion_tokens")
            or body["inferenceConfig"]["maxTokens"])
    assert sent == 20


FAULTS = [
    pytest.param(Script(status=429, retry_after="7"), ProviderRateLimited, 0, id="429"),
    pytest.param(Script(status=500), ProviderUnavailable, 0, id="500"),
    pytest.param("unavailable", ProviderUnavailable, 0, id="503-or-529"),
    pytest.param(Script(status=400), ProviderRejected, 0, id="400"),
    pytest.param(Script(status=404), ProviderMisconfigured, 0, id="404-unknown-model"),
    pytest.param(Script(drop_after=2), ProviderUnavailable, 2, id="dropped-after-2"),
    pytest.param(Script(drop_after=4), ProviderUnavailable, 4, id="dropped-after-the-text"),
    pytest.param(Script(drop_before_last=True), ProviderUnavailable, 4,
                 id="dropped-before-the-end"),
    pytest.param(Script(hang_s=3.0), ProviderUnavailable, 0, id="hang-before-first-byte"),
    pytest.param(Script(stall_s=3.0), ProviderUnavailable, 0, id="stall-after-headers"),
    pytest.param(Script(malformed_after=1), ProviderUnavailable, 1, id="malformed-chunk"),
    pytest.param(Script(stream_error_after=2), ProviderUnavailable, 2, id="error-event"),
    pytest.param(Script(end_after=3), ProviderUnavailable, 3, id="ended-unfinished"),
    pytest.param(Script(end_after=4), ProviderUnavailable, 4, id="ended-after-the-text"),
]


@pytest.mark.parametrize(("script", "error_class", "tokens_before"), FAULTS)
async def test_each_fault_becomes_the_right_project_error(
        vendor: Vendor, upstream: Upstream, script: Script | str,
        error_class: type[ProviderError], tokens_before: int) -> None:
    if script == "unavailable":
        script = Script(status=vendor.unavailable_status)
    assert isinstance(script, Script)
    upstream.script = script
    # A short timeout only where the fault is silence, so a busy machine cannot fake one.
    timeout_s = 0.5 if script.hang_s or script.stall_s else 5.0
    provider = build_provider(vendor.spec(upstream, timeout_s=timeout_s), ProviderOptions())
    events, error = await play(provider)
    assert type(error) is error_class
    assert len(texts(events)) == tokens_before
    assert not [event for event in events if isinstance(event, Usage | Finish)]
    assert error.retryable is not issubclass(error_class, ProviderRejected)
    if script.status is not None:
        assert error.status_code == script.status
    if script.retry_after is not None:
        # Bedrock sends no Retry-After; the others' is kept.
        assert error.retry_after == (None if vendor.provider == "bedrock" else 7.0)
    if script.hang_s or script.stall_s:
        # The vendor sees the service give up at the timeout, not 3 s later.
        assert await anyio.to_thread.run_sync(upstream.wait_for_outcomes) == ["client_closed"]


IN_STREAM_ERRORS = [
    pytest.param(ANTHROPIC, "rate_limit_error", ProviderRateLimited, id="anthropic-rate-limit"),
    pytest.param(ANTHROPIC, "api_error", ProviderUnavailable, id="anthropic-api-error"),
    pytest.param(ANTHROPIC, "invalid_request_error", ProviderRejected,
                 id="anthropic-invalid-request"),
    pytest.param(BEDROCK, "throttlingException", ProviderRateLimited, id="bedrock-throttling"),
    pytest.param(BEDROCK, "serviceUnavailableException", ProviderUnavailable,
                 id="bedrock-unavailable"),
    pytest.param(BEDROCK, "validationException", ProviderRejected, id="bedrock-validation"),
    pytest.param(OPENAI, "server_error", ProviderUnavailable, id="openai-server-error"),
]


@pytest.mark.parametrize(("vendor", "error_type", "error_class"), IN_STREAM_ERRORS,
                         indirect=["vendor"])
async def test_an_error_event_inside_the_stream_is_classed_by_its_type(
        vendor: Vendor, upstream: Upstream, error_type: str,
        error_class: type[ProviderError]) -> None:
    upstream.script = Script(stream_error_after=1, stream_error=error_type)
    events, error = await play(build_provider(vendor.spec(upstream), ProviderOptions()))
    assert texts(events) == ["Hello"] and type(error) is error_class


async def test_an_exhausted_openai_quota_is_not_worth_retrying(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(status=429, error_code="insufficient_quota")
    _, error = await play(build_provider(OPENAI.spec(upstream), ProviderOptions()))
    assert isinstance(error, ProviderMisconfigured) and not error.retryable
    assert error.status_code == 429 and "insufficient_quota" in error.message


async def test_cached_input_tokens_are_billed_input_on_every_vendor(
        vendor: Vendor, upstream: Upstream) -> None:
    upstream.script = Script(input_tokens=17, cache_read_tokens=12)
    events, error = await play(build_provider(vendor.spec(upstream), ProviderOptions()))
    assert error is None and Usage(input_tokens=17, output_tokens=9) in events


async def test_anthropic_cache_counts_survive_a_delta_that_leaves_them_out(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(ANTHROPIC)
    upstream.script = Script(input_tokens=17, cache_read_tokens=12, short_delta_usage=True)
    events, error = await play(build_provider(ANTHROPIC.spec(upstream), ProviderOptions()))
    assert error is None and Usage(input_tokens=17, output_tokens=9) in events


async def test_a_bedrock_request_waiting_for_a_pooled_connection_times_out(
        upstream_pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(bedrock_runtime, "MAX_POOL_CONNECTIONS", 1)
    upstream = upstream_pool.get(BEDROCK)
    upstream.script = Script(tokens=tuple(f" t{n}" for n in range(60)), token_delay_s=0.03)
    provider = build_provider(BEDROCK.spec(upstream, timeout_s=0.5), ProviderOptions())
    results: dict[str, tuple[list[ProviderEvent], ProviderError | None]] = {}

    async def run(name: str) -> None:
        results[name] = await play_keeping_client(provider)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(run, "first")
            await anyio.sleep(0.2)  # the first holds the only connection for ~1.8 s
            group.start_soon(run, "second")
    finally:
        await provider.aclose()
    assert results["first"][1] is None
    second_events, second_error = results["second"]
    assert second_events == [] and isinstance(second_error, ProviderUnavailable)
    assert second_error.message == "bedrock: timed out"


async def play_keeping_client(provider: Provider, request: CompletionRequest = REQUEST
                              ) -> tuple[list[ProviderEvent], ProviderError | None]:
    events: list[ProviderEvent] = []
    try:
        async for event in provider.stream(request):
            events.append(event)
    except ProviderError as exc:
        return events, exc
    return events, None


@pytest.mark.parametrize(("error", "error_class"), [
    (botocore.exceptions.EndpointConnectionError(endpoint_url="https://x"),
     ProviderUnavailable),
    (botocore.exceptions.ConnectionClosedError(endpoint_url="https://x"), ProviderUnavailable),
    (botocore.exceptions.ReadTimeoutError(endpoint_url="https://x"), ProviderUnavailable),
    (botocore.exceptions.CredentialRetrievalError(provider="sso", error_msg="expired"),
     ProviderMisconfigured),
    (botocore.exceptions.UnauthorizedSSOTokenError(), ProviderMisconfigured),
    (botocore.exceptions.ProfileNotFound(profile="prod"), ProviderMisconfigured),
    (botocore.exceptions.ParamValidationError(report="bad modelId"), ProviderRejected),
    (botocore.exceptions.InvalidConfigError(error_msg="expired"), ProviderMisconfigured),
])
def test_botocore_failures_are_classed_by_what_retrying_can_do(
        error: Exception, error_class: type[ProviderError]) -> None:
    mapped = bedrock_converse.vendor_error(error)
    assert type(mapped) is error_class
    assert "expired" not in mapped.message and "bad modelId" not in mapped.message


async def test_a_bad_credential_is_rejected_without_repeating_it(
        vendor: Vendor, upstream: Upstream) -> None:
    spec = vendor.spec(upstream)
    presented = (spec.credentials.key.reveal() if spec.credentials and spec.credentials.key
                 else AWS_TEST_ENV["AWS_ACCESS_KEY_ID"])
    upstream.api_key = "the-right-key"  # the configured one is now wrong, and gets echoed
    events, error = await play(build_provider(spec, ProviderOptions()))
    assert isinstance(error, ProviderRejected) and not error.retryable
    assert error.status_code == vendor.auth_status
    assert events == []
    assert presented in str(upstream.requests[-1].headers)  # the fake saw it, and echoed it
    assert presented[-8:] not in str(error) and presented[-8:] not in repr(error.args)


async def test_leaving_early_closes_the_upstream_connection(vendor: Vendor,
                                                            upstream: Upstream) -> None:
    upstream.script = Script(tokens=tuple(f" t{n}" for n in range(400)), token_delay_s=0.02)
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    stream: AsyncGenerator[ProviderEvent, None] = provider.stream(REQUEST)
    received = [await anext(stream), await anext(stream)]
    assert texts(received) == [" t0", " t1"]
    await stream.aclose()
    # The fake sees the client leave long before its 8 s answer could have finished.
    assert await anyio.to_thread.run_sync(upstream.wait_for_outcomes) == ["client_closed"]
    await provider.aclose()


async def test_a_cancelled_stream_closes_the_upstream_too(vendor: Vendor,
                                                          upstream: Upstream) -> None:
    """Cancellation mid-await (the way the pipeline stops) also releases the connection."""
    upstream.script = Script(tokens=tuple(f" t{n}" for n in range(400)), token_delay_s=0.02)
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    stream = provider.stream(REQUEST)
    with anyio.CancelScope() as scope:
        async for event in stream:
            if isinstance(event, TextDelta):
                scope.cancel()  # delivered inside the adapter, awaiting the next chunk
    assert scope.cancelled_caught
    with anyio.CancelScope(shield=True):
        await stream.aclose()
    assert await anyio.to_thread.run_sync(upstream.wait_for_outcomes) == ["client_closed"]
    await provider.aclose()


async def test_requests_reuse_the_routes_pooled_connection(vendor: Vendor,
                                                            upstream: Upstream) -> None:
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    try:
        for _ in range(3):
            events = [event async for event in provider.stream(REQUEST)]
            assert texts(events) == ["Hello", ",", " world", "!"]
    finally:
        await provider.aclose()
    assert len({received.client_port for received in upstream.requests}) == 1


def test_the_official_openai_route_sends_the_current_token_cap_name(
        upstream_pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """No base URL configured means api.openai.com, which wants `max_completion_tokens`;
    the SDK's own `OPENAI_BASE_URL` lookup lets the fake stand in for it here."""
    upstream = upstream_pool.get(OPENAI)
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.url + "/v1")
    spec = OPENAI.spec(upstream, base_url=None)
    _, error = anyio.run(play, build_provider(spec, ProviderOptions()))
    assert error is None
    assert upstream.last.json["max_completion_tokens"] == 64
    assert "max_tokens" not in upstream.last.json


def test_the_request_each_vendor_receives(upstream_pool: UpstreamPool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    history = CompletionRequest(messages=(
        Message("system", "Answer briefly."), Message("assistant", "How can I help?"),
        Message("user", "Hi."),
        Message("assistant", "Hello."), Message("user", "Tell me"),
        Message("user", "a joke.")), max_tokens=64)
    sent = {}
    for vendor in (OPENAI_COMPATIBLE, ANTHROPIC, BEDROCK):
        upstream = upstream_pool.get(vendor)
        anyio.run(play, build_provider(vendor.spec(upstream), ProviderOptions()), history)
        sent[vendor.name] = (upstream.last.path, upstream.last.json)
    path, body = sent["openai-compatible"]
    assert path == "/v1/chat/completions"
    assert body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64 and body["messages"][0] == {
        "role": "system", "content": "Answer briefly."}
    assert len(body["messages"]) == 6
    path, body = sent["anthropic"]
    assert path == "/v1/messages" and body["stream"] is True
    # The system prompt moves to `system`, the greeting before the user's first turn goes,
    # and two user messages in a row become one turn.
    assert body["system"] == "Answer briefly."
    assert body["messages"] == [{"role": "user", "content": "Hi."},
                                {"role": "assistant", "content": "Hello."},
                                {"role": "user", "content": "Tell me\n\na joke."}]
    assert body["max_tokens"] == 64
    path, body = sent["bedrock"]
    assert path == "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse-stream"
    assert body["system"] == [{"text": "Answer briefly."}]
    assert body["messages"][-1] == {"role": "user", "content": [{"text": "Tell me\n\na joke."}]}
    assert body["inferenceConfig"] == {"maxTokens": 64}


async def probe(spec: RouteSpec) -> RouteHealth:
    provider = build_provider(spec, ProviderOptions())
    try:
        return await provider.probe()
    finally:
        await provider.aclose()


async def test_the_route_check_is_usable_with_a_working_key(vendor: Vendor,
                                                            upstream: Upstream) -> None:
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    try:
        health = await provider.probe()
    finally:
        await provider.aclose()
    assert health == RouteHealth(credentials="present", reachable=True)
    # A check is never a completion: it costs nothing.
    assert not [r for r in upstream.requests if "messages" in r.path or "complet" in r.path
                or "converse" in r.path]


async def test_the_route_check_finds_an_unreachable_vendor(vendor: Vendor,
                                                           upstream: Upstream) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    spec = vendor.spec(upstream, base_url=f"http://127.0.0.1:{closed_port}{vendor.base_path}")
    provider = build_provider(spec, ProviderOptions())
    try:
        health = await provider.probe()
    finally:
        await provider.aclose()
    assert health.credentials == "present" and health.reachable is False and not health.usable


@pytest.mark.parametrize("keyed", [OPENAI, ANTHROPIC], ids=lambda vendor: vendor.name)
async def test_the_route_check_reports_a_refused_or_missing_key(
        keyed: Vendor, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(keyed)
    spec = keyed.spec(upstream)
    upstream.api_key = "another-key"
    refused = await probe(spec)
    assert refused == RouteHealth("refused", True, "key refused (HTTP 401)")
    missing_spec = keyed.spec(upstream, credentials=KeySource("TEAM_KEY", None,
                                                                  "set TEAM_KEY"))
    missing = await probe(missing_spec)
    assert missing == RouteHealth("missing", None, "no API key: set TEAM_KEY")
    _, error = await play(build_provider(missing_spec, ProviderOptions()))
    assert isinstance(error, ProviderMisconfigured) and error.message.endswith("set TEAM_KEY")
    assert [r.path for r in upstream.requests] == ["/v1/models"]


async def test_bedrock_without_aws_credentials_is_reported_not_tried(
        upstream_pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    upstream = upstream_pool.get(BEDROCK)
    health = await probe(BEDROCK.spec(upstream))
    assert health == RouteHealth("missing", None, "no AWS credentials found")
    _, error = await play(build_provider(BEDROCK.spec(upstream), ProviderOptions()))
    # The route is broken, not the request: no vendor call, no vendor status.
    assert isinstance(error, ProviderMisconfigured) and error.status_code is None
    assert upstream.requests == []


def _openai_chunk(**fields: object) -> bytes:
    return openai_wire.chunk_frame({"id": "chatcmpl-AZfake0001", "object": "chat.completion.chunk",
                                    "created": openai_wire.CREATED, "model": "gpt-4o-mini",
                                    **fields})


def _openai_choice(delta: object = None, finish_reason: object = None) -> bytes:
    return _openai_chunk(choices=[{"index": 0, "delta": delta, "logprobs": None,
                                   "finish_reason": finish_reason}])


def _openai_usage(**counts: object) -> bytes:
    return _openai_chunk(choices=[], usage={"prompt_tokens": 17, "completion_tokens": 9,
                                            "total_tokens": 26, **counts})


def _anthropic_text_delta(delta: object) -> bytes:
    return anthropic_wire.event_frame("content_block_delta", {
        "type": "content_block_delta", "index": 0, "delta": delta})


def _anthropic_message_delta(usage: object, stop_reason: object = None) -> bytes:
    return anthropic_wire.event_frame("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage})


def _bedrock_usage(**counts: object) -> bytes:
    return bedrock_wire.event_frame("metadata", {
        "usage": {"inputTokens": 17, "outputTokens": 9, "totalTokens": 26, **counts},
        "metrics": {"latencyMs": 412}})


# Chunks of a shape the adapter cannot use, sent after the first token, the answer then going
# on as normal: each must end the stream as a malformed chunk, a retryable vendor failure.
# Many were let through before the adapters checked each field they read (a count `int()`
# accepted, a text or reason of another type, a missing field read as empty), and Bedrock's
# undecodable payloads were a failure not worth retrying.
WRONG_SHAPES = [
    pytest.param(OPENAI, _openai_chunk(choices=["x"]), id="openai-choice-not-an-object"),
    pytest.param(OPENAI, _openai_chunk(choices={"0": {"delta": {"content": "x"}}}),
                 id="openai-choices-not-a-list"),
    pytest.param(OPENAI, _openai_choice(delta="x"), id="openai-delta-not-an-object"),
    pytest.param(OPENAI, _openai_choice(delta={"content": 5}), id="openai-content-a-number"),
    pytest.param(OPENAI, _openai_choice(delta={}, finish_reason=5),
                 id="openai-finish-reason-a-number"),
    pytest.param(OPENAI, _openai_usage(completion_tokens="9"), id="openai-count-a-string"),
    pytest.param(OPENAI, _openai_usage(prompt_tokens=1.5), id="openai-count-a-float"),
    pytest.param(OPENAI, _openai_usage(prompt_tokens=-3), id="openai-count-negative"),
    pytest.param(OPENAI, _openai_chunk(choices=[], usage="17"), id="openai-usage-a-string"),
    pytest.param(OPENAI, openai_wire.chunk_frame(["x"]), id="openai-chunk-a-list"),
    pytest.param(OPENAI, b'data: {"choices": [], "id": "\xff"}\n\n', id="openai-not-utf-8"),
    pytest.param(ANTHROPIC, anthropic_wire.event_frame("content_block_delta", {
        "type": "content_block_delta", "index": 0}), id="anthropic-delta-missing"),
    pytest.param(ANTHROPIC, _anthropic_text_delta("x"), id="anthropic-delta-a-string"),
    pytest.param(ANTHROPIC, _anthropic_text_delta({"type": "text_delta", "text": 5}),
                 id="anthropic-text-a-number"),
    pytest.param(ANTHROPIC, _anthropic_text_delta({"type": "text_delta"}),
                 id="anthropic-text-missing"),
    # (The SDK itself turns a numeric string or a bool into an int, as pydantic's lax mode.)
    pytest.param(ANTHROPIC, _anthropic_message_delta({"output_tokens": "nine"}),
                 id="anthropic-count-a-word"),
    pytest.param(ANTHROPIC, _anthropic_message_delta({"output_tokens": 9, "input_tokens": 2.5}),
                 id="anthropic-count-a-float"),
    pytest.param(ANTHROPIC, _anthropic_message_delta({"input_tokens": 17}),
                 id="anthropic-output-count-missing"),
    pytest.param(ANTHROPIC, _anthropic_message_delta(None), id="anthropic-usage-missing"),
    pytest.param(ANTHROPIC, _anthropic_message_delta({"output_tokens": 9}, stop_reason=5),
                 id="anthropic-stop-reason-a-number"),
    pytest.param(ANTHROPIC, anthropic_wire.event_frame("message_start", {
        "type": "message_start", "message": "x"}), id="anthropic-message-a-string"),
    pytest.param(ANTHROPIC, anthropic_wire.event_frame("content_block_delta", ["x"]),
                 id="anthropic-event-a-list"),
    pytest.param(ANTHROPIC, b'event: content_block_delta\ndata: {"type": "\xff"}\n\n',
                 id="anthropic-not-utf-8"),
    pytest.param(BEDROCK, _bedrock_usage(outputTokens="x"), id="bedrock-count-a-word"),
    pytest.param(BEDROCK, _bedrock_usage(outputTokens="9"), id="bedrock-count-a-string"),
    pytest.param(BEDROCK, _bedrock_usage(cacheReadInputTokens=2.5), id="bedrock-count-a-float"),
    pytest.param(BEDROCK, bedrock_wire.event_frame("metadata", {"metrics": {"latencyMs": 1}}),
                 id="bedrock-usage-missing"),
    pytest.param(BEDROCK, bedrock_wire.event_frame("contentBlockDelta", {
        "contentBlockIndex": 0, "delta": {"text": 5}}), id="bedrock-text-a-number"),
    pytest.param(BEDROCK, bedrock_wire.event_frame("contentBlockDelta", {
        "contentBlockIndex": 0}), id="bedrock-delta-missing"),
    pytest.param(BEDROCK, bedrock_wire.event_frame("contentBlockDelta", {
        "contentBlockIndex": 0, "delta": {}}), id="bedrock-delta-empty"),
    pytest.param(BEDROCK, bedrock_wire.event_frame("messageStop", {"stopReason": 5}),
                 id="bedrock-stop-reason-a-number"),
    pytest.param(BEDROCK, bedrock_wire.event_frame("messageStop", {}),
                 id="bedrock-stop-reason-missing"),
    pytest.param(BEDROCK, encode_message({":event-type": "contentBlockDelta",
                                          ":content-type": "application/json",
                                          ":message-type": "event"}, b'{"delta": "\xff"}'),
                 id="bedrock-not-utf-8"),
]


@pytest.mark.parametrize(("vendor", "chunk"), WRONG_SHAPES, indirect=["vendor"])
async def test_a_wrongly_shaped_chunk_is_a_retryable_malformed_chunk(
        vendor: Vendor, upstream: Upstream, chunk: bytes) -> None:
    upstream.script = Script(raw_chunk=chunk, raw_after=1)
    events, error = await play(build_provider(vendor.spec(upstream), ProviderOptions()))
    assert type(error) is ProviderUnavailable and error.retryable
    assert error.message == f"{vendor.provider}: malformed stream chunk"
    # Nothing the vendor sent chained to it, for a log to print.
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert texts(events) == ["Hello"]  # what came before it, and nothing after
    assert not [event for event in events if isinstance(event, Usage | Finish)]


def _raise_type_error(*args: object, **kwargs: object) -> NoReturn:
    raise TypeError("an adapter bug")


async def _raise_type_error_when_awaited(*args: object, **kwargs: object) -> NoReturn:
    raise TypeError("an adapter bug")


ADAPTERS: dict[str, ModuleType] = {"openai": openai_chat, "anthropic": anthropic_messages,
                                   "bedrock": bedrock_converse}
# Where a bug is planted: building the first text delta, or reading the closing usage.
BUG_SITES: dict[str, dict[str, tuple[object, str]]] = {
    "openai": {"text": (openai_chat, "TextDelta"), "usage": (openai_chat, "_usage")},
    "anthropic": {"text": (anthropic_messages, "TextDelta"),
                  "usage": (anthropic_messages._InputCounts, "update")},
    "bedrock": {"text": (bedrock_converse, "TextDelta"), "usage": (bedrock_converse, "_usage")},
}


@pytest.mark.parametrize("site", ["text", "usage"])
@pytest.mark.parametrize("vendor", [OPENAI, ANTHROPIC, BEDROCK], ids=lambda vendor: vendor.name,
                         indirect=True)
async def test_a_bug_in_an_adapter_is_raised_as_it_is_not_as_a_vendor_failure(
        vendor: Vendor, upstream: Upstream, site: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    owner, name = BUG_SITES[vendor.name][site]
    # raising=False: a site the old code lacked leaves the test failing, not erroring.
    monkeypatch.setattr(owner, name, _raise_type_error, raising=False)
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    with pytest.raises(TypeError, match="an adapter bug") as raised:
        await play(provider)
    # Unchanged: the very exception, raised through the adapter's own frames.
    assert not isinstance(raised.value, ProviderError)
    adapter_file = ADAPTERS[vendor.name].__file__
    assert any(str(entry.path) == adapter_file for entry in raised.traceback)
    assert await anyio.to_thread.run_sync(upstream.wait_for_outcomes)  # the response ended


@pytest.mark.parametrize(("module", "error"), [
    pytest.param(openai_chat, TypeError("x"), id="openai-TypeError"),
    pytest.param(openai_chat, AttributeError("x"), id="openai-AttributeError"),
    pytest.param(openai_chat, ValueError("x"), id="openai-ValueError"),
    pytest.param(openai_chat, KeyError("x"), id="openai-KeyError"),
    pytest.param(openai_chat, RuntimeError("x"), id="openai-RuntimeError"),
    pytest.param(anthropic_messages, TypeError("x"), id="anthropic-TypeError"),
    pytest.param(anthropic_messages, AttributeError("x"), id="anthropic-AttributeError"),
    pytest.param(anthropic_messages, ValueError("x"), id="anthropic-ValueError"),
    pytest.param(bedrock_converse, TypeError("x"), id="bedrock-TypeError"),
    pytest.param(bedrock_converse, AttributeError("x"), id="bedrock-AttributeError"),
    pytest.param(bedrock_converse, ValueError("x"), id="bedrock-ValueError"),
    pytest.param(bedrock_converse, KeyError("x"), id="bedrock-KeyError"),
])
def test_an_exception_that_is_no_wire_problem_is_not_translated(
        module: ModuleType, error: Exception) -> None:
    assert module.vendor_error(error) is None


@pytest.mark.parametrize(("module", "error", "message"), [
    pytest.param(openai_chat, json.JSONDecodeError("x", "{", 1),
                 "openai: malformed stream chunk", id="openai-not-json"),
    pytest.param(openai_chat, UnicodeDecodeError("utf-8", b"\xff", 0, 1, "x"),
                 "openai: malformed stream chunk", id="openai-not-utf-8"),
    pytest.param(anthropic_messages, json.JSONDecodeError("x", "{", 1),
                 "anthropic: malformed stream chunk", id="anthropic-not-json"),
    pytest.param(bedrock_converse, ParserError("checksum"),
                 "bedrock: malformed event stream frame", id="bedrock-bad-frame"),
    pytest.param(bedrock_converse, ResponseParserError("one member"),
                 "bedrock: malformed stream chunk", id="bedrock-bad-payload"),
])
def test_bytes_that_do_not_decode_are_a_retryable_vendor_failure(
        module: ModuleType, error: Exception, message: str) -> None:
    mapped = module.vendor_error(error)
    assert type(mapped) is ProviderUnavailable and mapped.message == message


@pytest.mark.parametrize("keyed", [OPENAI, ANTHROPIC], ids=lambda vendor: vendor.name)
async def test_a_route_check_failing_on_a_bug_raises_it_rather_than_report_the_vendor(
        keyed: Vendor, upstream_pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readiness logs what a check raises with its stack; a vendor status would hide it."""
    models = openai.resources.models.AsyncModels if keyed is OPENAI else (
        anthropic.resources.models.AsyncModels)
    monkeypatch.setattr(models, "list", _raise_type_error_when_awaited)  # a changed SDK, say
    with pytest.raises(TypeError, match="an adapter bug"):
        await probe(keyed.spec(upstream_pool.get(keyed)))
