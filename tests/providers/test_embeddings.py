"""The embedders (providers/embeddings.py), driven by the official SDKs against the fakes'
embedding endpoints over loopback; and those endpoints themselves."""

from __future__ import annotations

import ast
import math
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import openai
import pytest

from providers.credentials import KeySource, Secret
from providers.embeddings import Embedder, build_embedder
from providers.errors import ProviderError, ProviderMisconfigured, ProviderUnavailable
from providers.spec import RouteSpec
from tests.upstreams.bedrock_wire import TITAN_V2
from tests.upstreams.common import Upstream, fake_embedding
from tests.upstreams.openai_wire import DEFAULT_EMBEDDING_DIMENSIONS
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import AWS_TEST_ENV, BEDROCK, OPENAI, Vendor

OPENAI_MODEL = "text-embedding-3-small"
TITAN_V1 = "amazon.titan-embed-text-v1"
QUESTION = "What is the capital of France?"


@pytest.fixture(autouse=True)
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # The AWS SDK reads its credential chain itself.
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)


def openai_key(key: str) -> KeySource:
    return KeySource("OPENAI_API_KEY", Secret(key), "set OPENAI_API_KEY")


def openai_spec(upstream: Upstream, **changes: object) -> RouteSpec:
    fields: dict[str, object] = {"base_url": upstream.url + "/v1", "timeout_s": 5.0,
                                 "credentials": openai_key(upstream.api_key), **changes}
    return RouteSpec("openai", OPENAI_MODEL, **fields)  # type: ignore[arg-type]


def titan_spec(upstream: Upstream, model: str = TITAN_V2, **changes: object) -> RouteSpec:
    fields: dict[str, object] = {"base_url": upstream.url, "timeout_s": 5.0,
                                 "region": "us-east-1", **changes}
    return RouteSpec("bedrock", model, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Kind:
    """One vendor's embedding endpoint, as these tests use it."""

    name: str
    vendor: Vendor  # its fake, from the pool
    spec: Callable[..., RouteSpec]
    default_dimensions: int
    auth_status: int

    def embedder(self, upstream: Upstream, dimensions: int | None = 256,
                 **changes: object) -> Embedder:
        return build_embedder(self.spec(upstream, **changes), dimensions)


OPENAI_KIND = Kind("openai", OPENAI, openai_spec, DEFAULT_EMBEDDING_DIMENSIONS, 401)
TITAN_KIND = Kind("bedrock", BEDROCK, titan_spec, 1024, 403)
KINDS = [pytest.param(OPENAI_KIND, id="openai"), pytest.param(TITAN_KIND, id="bedrock")]


async def embed_once(embedder: Embedder, text: str = QUESTION) -> list[float]:
    try:
        return await embedder.embed(text)
    finally:
        await embedder.aclose()


async def failure(embedder: Embedder, text: str = QUESTION) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await embed_once(embedder, text)
    return caught.value


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def embedding_requests(upstream: Upstream) -> int:
    return sum(seen.path.endswith(("/embeddings", "/invoke")) for seen in upstream.requests)


# The vector and the request.

@pytest.mark.parametrize("kind", KINDS)
async def test_the_vector_is_the_fakes_deterministic_one(kind: Kind,
                                                         upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(kind.vendor)
    embedder = kind.embedder(upstream, 512)
    assert embedder.name == f"{kind.name}/{kind.spec(upstream).model}"
    vector = await embed_once(embedder)
    assert vector == fake_embedding(QUESTION, 512)
    assert all(type(number) is float for number in vector)
    assert embedding_requests(upstream) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_no_dimensions_takes_the_models_own_length(kind: Kind,
                                                         upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(kind.vendor)
    vector = await embed_once(kind.embedder(upstream, None))
    assert vector == fake_embedding(QUESTION, kind.default_dimensions)
    assert "dimensions" not in upstream.last.json


async def test_the_openai_request_names_the_model_input_and_dimensions(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    await embed_once(OPENAI_KIND.embedder(upstream, 256))
    seen = upstream.last
    assert seen.path == "/v1/embeddings"
    assert seen.headers["authorization"] == f"Bearer {upstream.api_key}"
    assert seen.json == {"model": OPENAI_MODEL, "input": QUESTION, "dimensions": 256,
                         "encoding_format": "float"}


async def test_the_titan_request_names_the_model_input_and_dimensions(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(BEDROCK)
    await embed_once(TITAN_KIND.embedder(upstream, 256))
    seen = upstream.last
    assert seen.path == f"/model/{TITAN_V2}/invoke"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["accept"] == "application/json"
    assert seen.json == {"inputText": QUESTION, "normalize": True, "dimensions": 256}


async def test_titan_v1_is_sent_the_text_alone(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(BEDROCK)
    vector = await embed_once(build_embedder(titan_spec(upstream, TITAN_V1), None))
    assert upstream.last.json == {"inputText": QUESTION}
    assert len(vector) == 1536 and vector == fake_embedding(QUESTION, 1536, normalize=False)
    with pytest.raises(ValueError, match="1536"):
        build_embedder(titan_spec(upstream, TITAN_V1), 256)


@pytest.mark.parametrize("kind", KINDS)
async def test_similar_texts_are_closer_than_unrelated_ones(kind: Kind,
                                                            upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(kind.vendor)
    embedder = kind.embedder(upstream, 256)
    try:
        question = await embedder.embed(QUESTION)
        same_words = await embedder.embed("capital of france: what is THE")
        similar = await embedder.embed("What is the capital city of France?")
        unrelated = await embedder.embed("How long do I bake sourdough bread for?")
    finally:
        await embedder.aclose()
    assert cosine(question, same_words) == pytest.approx(1.0)
    assert cosine(question, similar) > 0.8
    assert cosine(question, unrelated) < cosine(question, similar) - 0.4
    assert embedding_requests(upstream) == 4  # one client, one request each


# Failures.

@pytest.mark.parametrize("kind", KINDS)
async def test_an_overloaded_vendor_is_a_retryable_error(kind: Kind,
                                                         upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(kind.vendor)
    upstream.embedding_status = 503
    error = await failure(kind.embedder(upstream))
    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert error.status_code == 503


async def test_a_refused_openai_key_is_a_broken_route_without_the_key(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    wrong = "sk-wrong-key-0123456789abcdef"
    error = await failure(OPENAI_KIND.embedder(upstream, credentials=openai_key(wrong)))
    assert isinstance(error, ProviderMisconfigured) and not error.retryable
    assert error.status_code == 401
    assert "wrong" not in error.message and "0123" not in error.message
    assert error.message == "openai returned HTTP 401 (invalid_api_key)"


async def test_a_refused_aws_key_is_a_broken_route_without_the_key(
        upstream_pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = upstream_pool.get(BEDROCK)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY00000009")
    error = await failure(TITAN_KIND.embedder(upstream))
    assert isinstance(error, ProviderMisconfigured) and not error.retryable
    assert error.status_code == 403
    assert "AKIA" not in error.message
    assert error.message == "bedrock returned HTTP 403 (UnrecognizedClientException)"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stalled_vendor_times_out(kind: Kind, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(kind.vendor)
    upstream.embedding_delay_s = 3.0
    started = time.monotonic()
    error = await failure(kind.embedder(upstream, timeout_s=0.5))
    assert time.monotonic() - started < 2.0
    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert error.message == f"{kind.name}: timed out"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_refused_connection_is_a_retryable_error(kind: Kind,
                                                        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(kind.vendor)
    with socket.socket() as sock:  # a port nobody listens on, once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = f"http://127.0.0.1:{port}"
    base_url = closed + "/v1" if kind is OPENAI_KIND else closed
    error = await failure(kind.embedder(upstream, base_url=base_url))
    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert "connection failed" in error.message


MALFORMED_OPENAI = [
    pytest.param(b'{"object":"list","data":[{"object":"embe', id="not-json"),
    pytest.param(b'{"object":"list","data":[],"model":"m"}', id="no-data"),
    pytest.param(b'{"object":"list","data":[{"embedding":[0.1,"0.2"]}]}', id="a-string"),
    pytest.param(b'{"object":"list","data":[{"embedding":[0.1,NaN]}]}', id="nan"),
    pytest.param(b'{"object":"list","data":[{"embedding":[]}]}', id="empty"),
    pytest.param(b'{"object":"list","data":[1.0]}', id="not-an-object"),
    pytest.param(b'"just a string"', id="a-json-string"),
]
MALFORMED_TITAN = [
    pytest.param(b'{"embedding":[0.1,', id="not-json"),
    pytest.param(b'{"inputTextTokenCount":3}', id="no-embedding"),
    pytest.param(b'{"embedding":"0.1,0.2"}', id="a-string"),
    pytest.param(b'{"embedding":[0.1,null]}', id="a-null"),
    pytest.param(b'{"embedding":[0.1,true]}', id="a-bool"),  # the OpenAI SDK makes it 1.0
    pytest.param(b"[0.1,0.2]", id="not-an-object"),
]


@pytest.mark.parametrize("body", MALFORMED_OPENAI)
async def test_an_unreadable_openai_answer_is_a_retryable_error(
        body: bytes, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.embedding_body = body
    error = await failure(OPENAI_KIND.embedder(upstream, None))
    assert isinstance(error, ProviderUnavailable) and error.retryable


@pytest.mark.parametrize("body", MALFORMED_TITAN)
async def test_an_unreadable_titan_answer_is_a_retryable_error(
        body: bytes, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(BEDROCK)
    upstream.embedding_body = body
    error = await failure(TITAN_KIND.embedder(upstream, None))
    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert error.message == "bedrock: malformed embedding response"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_vector_of_another_length_is_a_configuration_error(
        kind: Kind, upstream_pool: UpstreamPool) -> None:
    # A compatible server that ignores `dimensions` answers in its model's own length.
    upstream = upstream_pool.get(kind.vendor)
    upstream.embedding_body = (b'{"object":"list","data":[{"object":"embedding","index":0,'
                               b'"embedding":[0.6,0.8]}],"model":"m"}'
                               if kind is OPENAI_KIND else b'{"embedding":[0.6,0.8]}')
    error = await failure(kind.embedder(upstream, 256))
    assert isinstance(error, ProviderMisconfigured) and not error.retryable
    assert "2 dimensions, not the 256" in error.message


@pytest.mark.parametrize("credentials", [
    pytest.param(None, id="no-key-source"),
    pytest.param(KeySource("OPENAI_API_KEY", None, "set OPENAI_API_KEY"), id="key-unset"),
    pytest.param(openai_key(""), id="key-empty"),
])
async def test_a_missing_openai_key_fails_each_embed_not_the_build(
        credentials: KeySource | None, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    embedder = OPENAI_KIND.embedder(upstream, credentials=credentials)
    error = await failure(embedder)
    assert isinstance(error, ProviderMisconfigured) and not error.retryable
    assert error.message.startswith("openai: no API key")
    assert upstream.requests == []


def test_a_provider_without_embeddings_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="'anthropic' has no embedding endpoint"):
        build_embedder(RouteSpec("anthropic", "claude-3-5-haiku-latest"), None)
    with pytest.raises(ValueError, match="no embedding endpoint"):
        build_embedder(RouteSpec("demo", "hello-1"), None)
    with pytest.raises(ValueError, match="positive"):
        build_embedder(RouteSpec("openai", OPENAI_MODEL), 0)


SDK_MODULES = ("openai", "anthropic", "aioboto3", "boto3", "botocore")


@pytest.mark.parametrize(("build", "loaded"), [
    pytest.param("", set(), id="import-only"),
    pytest.param("build_embedder(RouteSpec('openai', 'text-embedding-3-small'), None)\n",
                 {"openai"}, id="openai"),
    pytest.param("build_embedder(RouteSpec('bedrock', 'amazon.titan-embed-text-v2:0',"
                 " region='us-east-1'), None)\n", {"aioboto3", "boto3", "botocore"},
                 id="bedrock"),
])
def test_an_embedder_loads_only_its_own_vendor_sdk(build: str, loaded: set[str]) -> None:
    script = (
        "import sys\n"
        "from providers.embeddings import build_embedder\n"
        "from providers.spec import RouteSpec\n"
        f"{build}"
        f"print(sorted(name for name in {SDK_MODULES!r} if name in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=60)
    assert set(ast.literal_eval(result.stdout.strip())) == loaded


# The fakes' own endpoints, as other tests may use them.

def test_the_fake_vector_ignores_case_order_and_punctuation() -> None:
    vector = fake_embedding("Hello, world!", 64)
    assert vector == fake_embedding("WORLD hello", 64)
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0)
    assert fake_embedding("Hello world", 64, normalize=False) != vector
    assert any(fake_embedding("?!", 64))  # no word at all is still no zero vector


def test_the_fake_vector_is_the_same_in_another_process() -> None:
    script = ("from tests.upstreams.common import fake_embedding\n"
              "print(fake_embedding('same in every process', 32))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=60)
    assert ast.literal_eval(result.stdout.strip()) == fake_embedding("same in every process", 32)


async def test_the_openai_fake_answers_lists_and_base64_as_openai_does(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    client = openai.AsyncOpenAI(api_key=upstream.api_key, base_url=upstream.url + "/v1",
                                max_retries=0)
    try:
        raw = await client.embeddings.with_raw_response.create(
            model=OPENAI_MODEL, input=["one text", "two texts"], dimensions=8,
            encoding_format="float")
        # The SDK's own default: base64 of little-endian float32s, decoded by the SDK.
        decoded = await client.embeddings.create(model=OPENAI_MODEL, input="one text")
    finally:
        await client.close()
    body = raw.http_response.json()
    assert body == {
        "object": "list", "model": OPENAI_MODEL,
        "data": [{"object": "embedding", "index": 0, "embedding": fake_embedding("one text", 8)},
                 {"object": "embedding", "index": 1,
                  "embedding": fake_embedding("two texts", 8)}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    assert decoded.data[0].embedding == pytest.approx(
        fake_embedding("one text", DEFAULT_EMBEDDING_DIMENSIONS), abs=1e-6)
    assert upstream.last.json["encoding_format"] == "base64"


async def test_the_openai_fake_refuses_an_empty_input(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    error = await failure(OPENAI_KIND.embedder(upstream), "")
    assert error.status_code == 400 and not error.retryable


@pytest.mark.parametrize(("fields", "problem"), [
    pytest.param({"dimensions": 300}, "is not a valid enum value", id="dimensions"),
    pytest.param({"inputText": ""}, "minLength", id="empty-text"),
    pytest.param({"temperature": 0.5}, "extraneous key [temperature]", id="unknown-field"),
])
async def test_the_titan_fake_refuses_what_titan_refuses(
        fields: dict[str, object], problem: str, upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(BEDROCK)
    response = await _invoke(upstream, TITAN_V2, {"inputText": "hello", **fields})
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert problem in response.json()["message"]


async def test_the_titan_fake_honours_normalize(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(BEDROCK)
    response = await _invoke(upstream, TITAN_V2, {"inputText": "hello hello world",
                                                  "dimensions": 256, "normalize": False})
    answer = response.json()
    raw = fake_embedding("hello hello world", 256, normalize=False)
    assert answer == {"embedding": raw, "embeddingsByType": {"float": raw},
                      "inputTextTokenCount": 3}


async def _invoke(upstream: Upstream, model: str, body: dict[str, object]) -> httpx.Response:
    """`InvokeModel` by plain HTTP, to read what the fake answers (botocore raises on a 400).
    The fake checks the access key id of the credential scope, not the signature."""
    access_key = AWS_TEST_ENV["AWS_ACCESS_KEY_ID"]
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{upstream.url}/model/{model}/invoke", json=body,
            headers={"authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/20250101/"
                                      "us-east-1/bedrock/aws4_request, Signature=0"})
