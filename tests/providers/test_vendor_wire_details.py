"""Details of the vendors' wire that the adapters read as their SDKs did: line ends, comments
and unnamed events in SSE, exceptions and unknown events in Bedrock's event stream. Each
frame of the test's own making goes out before the second token, the answer then going on."""

from __future__ import annotations

from types import ModuleType

import aiohttp
import anthropic
import httpx2
import openai
import orjson
import pytest
from aiohttp.client_reqrep import ConnectionKey

from providers import anthropic_messages, openai_chat
from providers.errors import ProviderError, ProviderRateLimited, ProviderUnavailable
from providers.registry import ProviderOptions, build_provider
from providers.types import CompletionRequest, Finish, Message, ProviderEvent, TextDelta, Usage
from tests.providers.test_vendor_adapters import play_keeping_client
from tests.upstreams import anthropic_wire, bedrock_wire, openai_wire
from tests.upstreams.common import Script, Upstream
from tests.upstreams.eventstream import encode_message
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, AWS_TEST_ENV, BEDROCK, OPENAI, Vendor

REQUEST = CompletionRequest((Message("user", "Say hello."),), max_tokens=64)
ANSWER = ["Hello", ",", " world", "!"]


async def play(vendor: Vendor, upstream: Upstream, frame: bytes
               ) -> tuple[list[ProviderEvent], ProviderError | None]:
    upstream.script = Script(raw_chunk=frame, raw_after=1)
    provider = build_provider(vendor.spec(upstream), ProviderOptions())
    try:
        return await play_keeping_client(provider)
    finally:
        await provider.aclose()


def texts(events: list[ProviderEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)


def openai_chunk(text: str) -> bytes:
    return orjson.dumps({"id": "chatcmpl-AZfake0001", "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": {"content": text},
                                      "finish_reason": None}]})


@pytest.mark.parametrize("frame", [
    pytest.param(b"data: " + openai_chunk(" there") + b"\r\n\r\n", id="crlf"),
    pytest.param(b"data: " + openai_chunk(" there") + b"\r\r", id="cr"),
    pytest.param(b": keep-alive\n\ndata: " + openai_chunk(" there") + b"\n:x\n\n",
                 id="comments"),
    # The OpenAI SDK took a block of `id` or `retry` alone for an empty chunk, a malformed
    # one; no data is no event (WHATWG), as the Anthropic SDK reads it too.
    pytest.param(b"id: 3\nretry: 10\n\ndata: " + openai_chunk(" there") + b"\nid: 4\n\n",
                 id="id-and-retry"),
    pytest.param(b"data: " + openai_chunk(" there").replace(b",", b",\ndata: ") + b"\n\n",
                 id="data-over-several-lines"),
    pytest.param(b"event: chunk\ndata:" + openai_chunk(" there") + b"\n\n", id="named"),
])
async def test_openai_chunks_in_any_sse_framing_are_read(upstream_pool: UpstreamPool,
                                                         frame: bytes) -> None:
    events, error = await play(OPENAI, upstream_pool.get(OPENAI), frame)
    assert error is None
    assert texts(events) == ["Hello", " there", ",", " world", "!"]
    assert events[-1] == Finish("stop")


@pytest.mark.parametrize("frame", [
    pytest.param(b"event: note\n\n", id="event-without-data"),
    pytest.param(b"data\n\n", id="empty-data"),
])
async def test_an_openai_event_with_no_chunk_in_it_is_malformed(
        upstream_pool: UpstreamPool, frame: bytes) -> None:
    events, error = await play(OPENAI, upstream_pool.get(OPENAI), frame)
    assert type(error) is ProviderUnavailable
    assert error.message == "openai: malformed stream chunk" and texts(events) == ["Hello"]


async def test_openai_error_chunk_is_the_vendor_failing_mid_answer(
        upstream_pool: UpstreamPool) -> None:
    frame = openai_wire.chunk_frame({"error": {"message": "boom", "type": "server_error",
                                               "code": "overloaded"}})
    events, error = await play(OPENAI, upstream_pool.get(OPENAI), frame)
    assert type(error) is ProviderUnavailable and texts(events) == ["Hello"]
    assert error.message == "openai stream error (overloaded)"


@pytest.mark.parametrize("frame", [
    pytest.param(anthropic_wire.event_frame("ping", {"type": "ping"}), id="ping"),
    pytest.param(b'data: {"type": "content_block_delta", "index": 0, "delta": {"type": '
                 b'"text_delta", "text": "unnamed"}}\n\n', id="unnamed"),
    pytest.param(b"event: content_block_delta\n\n", id="no-data"),
    pytest.param(anthropic_wire.event_frame("brand_new_event", {"type": "brand_new_event"}),
                 id="unknown-type"),
    pytest.param(anthropic_wire.event_frame("content_block_delta", {
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "hm"}}), id="thinking-delta"),
    pytest.param(b": comment\r\n\r\n", id="comment"),
])
async def test_anthropic_events_the_sdk_skips_are_skipped(upstream_pool: UpstreamPool,
                                                          frame: bytes) -> None:
    events, error = await play(ANTHROPIC, upstream_pool.get(ANTHROPIC), frame)
    assert error is None and texts(events) == ANSWER
    assert Usage(17, 9) in events and events[-1] == Finish("stop")


async def test_anthropic_text_in_crlf_framing_is_read(upstream_pool: UpstreamPool) -> None:
    frame = anthropic_wire.event_frame("content_block_delta", {
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": " there"}}).replace(b"\n", b"\r\n")
    events, error = await play(ANTHROPIC, upstream_pool.get(ANTHROPIC), frame)
    assert error is None and texts(events) == ["Hello", " there", ",", " world", "!"]


@pytest.mark.parametrize(("frame", "error_class", "message"), [
    pytest.param(b"event: error\ndata: not json\n\n", ProviderUnavailable,
                 "anthropic stream error", id="not-json"),
    pytest.param(b"event: error\n\n", ProviderUnavailable, "anthropic stream error",
                 id="no-data"),
    pytest.param(anthropic_wire.event_frame("error", {"type": "error", "error": {
        "type": "rate_limit_error", "message": "slow down"}}), ProviderRateLimited,
                 "anthropic stream error (rate_limit_error)", id="rate-limit"),
])
async def test_an_anthropic_error_event_is_classed_by_its_type(
        upstream_pool: UpstreamPool, frame: bytes, error_class: type[ProviderError],
        message: str) -> None:
    events, error = await play(ANTHROPIC, upstream_pool.get(ANTHROPIC), frame)
    assert type(error) is error_class and error.message == message
    assert texts(events) == ["Hello"]


def bedrock_exception(exception_type: str, **headers: str) -> bytes:
    return encode_message({":exception-type": exception_type,
                           ":content-type": "application/json",
                           ":message-type": "exception", **headers},
                          b'{"message": "The model stream was interrupted."}')


@pytest.mark.parametrize(("frame", "error_class", "status", "message"), [
    pytest.param(bedrock_exception("throttlingException"), ProviderRateLimited, 429,
                 "bedrock stream error (throttlingException)", id="in-the-model"),
    # botocore names an exception of a type its model lacks by `:error-code` alone.
    pytest.param(bedrock_exception("modelTimeoutException"), ProviderUnavailable, 500,
                 "bedrock stream error", id="not-in-the-model"),
    pytest.param(bedrock_exception("modelTimeoutException", **{
        ":error-code": "ThrottlingException"}), ProviderRateLimited, 429,
                 "bedrock stream error (ThrottlingException)", id="not-in-the-model-coded"),
    pytest.param(encode_message({":message-type": "error",
                                 ":error-code": "ThrottlingException",
                                 ":error-message": "slow down"}, b""),
                 ProviderRateLimited, 429, "bedrock stream error (ThrottlingException)",
                 id="error-message"),
])
async def test_a_bedrock_exception_is_classed_as_botocore_names_it(
        upstream_pool: UpstreamPool, aws: None, frame: bytes,
        error_class: type[ProviderError], status: int, message: str) -> None:
    events, error = await play(BEDROCK, upstream_pool.get(BEDROCK), frame)
    assert type(error) is error_class and error.message == message
    assert error.status_code == status and texts(events) == ["Hello"]


@pytest.mark.parametrize("frame", [
    pytest.param(bedrock_wire.event_frame("brandNewEvent", {"x": 1}), id="unknown-event"),
    pytest.param(bedrock_wire.event_frame("contentBlockDelta", {
        "contentBlockIndex": 0, "delta": {"toolUse": {"input": "{}"}}}), id="tool-use-delta"),
    pytest.param(bedrock_wire.event_frame("contentBlockDelta", {
        "contentBlockIndex": 0, "delta": {"text": None, "reasoningContent": {"text": "hm"}}}),
                 id="one-member-of-two-set"),
    pytest.param(bedrock_wire.event_frame("contentBlockStart", {
        "contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "n"}}}),
                 id="block-start"),
])
async def test_bedrock_events_without_text_are_skipped(upstream_pool: UpstreamPool,
                                                       aws: None, frame: bytes) -> None:
    events, error = await play(BEDROCK, upstream_pool.get(BEDROCK), frame)
    assert error is None and texts(events) == ANSWER
    assert Usage(17, 9) in events and events[-1] == Finish("stop")


@pytest.mark.parametrize("delta", [
    pytest.param({"text": "x", "reasoningContent": {"text": "hm"}}, id="two-members"),
    pytest.param({"text": None}, id="a-null-member"),
    pytest.param({"__type": "text"}, id="only-a-type"),
])
async def test_a_bedrock_delta_not_setting_one_member_is_malformed(
        upstream_pool: UpstreamPool, aws: None, delta: dict[str, object]) -> None:
    frame = bedrock_wire.event_frame("contentBlockDelta", {"contentBlockIndex": 0,
                                                           "delta": delta})
    events, error = await play(BEDROCK, upstream_pool.get(BEDROCK), frame)
    assert type(error) is ProviderUnavailable
    assert error.message == "bedrock: malformed stream chunk" and texts(events) == ["Hello"]


def _refused() -> aiohttp.ClientError:
    key = ConnectionKey("127.0.0.1", 9, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))


@pytest.mark.parametrize(("module", "timeout", "cause", "message"), [
    pytest.param(openai_chat, openai.APITimeoutError, _refused(), "openai: connection failed",
                 id="openai-refused"),
    pytest.param(openai_chat, openai.APITimeoutError, aiohttp.ServerDisconnectedError(),
                 "openai: connection failed", id="openai-hung-up"),
    pytest.param(openai_chat, openai.APITimeoutError, aiohttp.SocketTimeoutError(),
                 "openai: timed out", id="openai-read-timeout"),
    pytest.param(anthropic_messages, anthropic.APITimeoutError, _refused(),
                 "anthropic: connection failed", id="anthropic-refused"),
    pytest.param(anthropic_messages, anthropic.APITimeoutError,
                 aiohttp.ConnectionTimeoutError(), "anthropic: timed out",
                 id="anthropic-connect-timeout"),
])
def test_the_aiohttp_transports_timeouts_are_told_from_its_connection_errors(
        module: ModuleType, timeout: type[Exception], cause: BaseException,
        message: str) -> None:
    """The SDKs' aiohttp transport reports every aiohttp connection error as a
    `ConnectTimeout`, which the SDK raises as its timeout error."""
    transport_error = httpx2.ConnectTimeout("mapped")
    transport_error.__cause__ = cause
    error = timeout(request=httpx2.Request("POST", "http://127.0.0.1/"))
    error.__cause__ = transport_error
    mapped = module.vendor_error(error)
    assert type(mapped) is ProviderUnavailable and mapped.message == message


def test_an_aiohttp_error_the_transport_lets_through_is_a_connection_failure() -> None:
    mapped = openai_chat.vendor_error(aiohttp.ClientPayloadError("cut"))
    assert type(mapped) is ProviderUnavailable and mapped.message == "openai: connection failed"
