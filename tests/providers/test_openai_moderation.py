"""The moderation backend, driven by the official SDK against the fake OpenAI over HTTP."""

from __future__ import annotations

import socket
import time
from typing import Any, NoReturn

import anyio
import httpx
import pytest
from openai.types.moderation_create_response import ModerationCreateResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from providers import openai_moderation
from providers.credentials import Secret
from providers.errors import (
    ProviderError,
    ProviderMisconfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.openai_moderation import ModerationVerdict, OpenAIModeration
from tests.servers import thread_server
from tests.upstreams.common import Script, Upstream
from tests.upstreams.openai_wire import MODERATION_CATEGORIES, MODERATION_FLAG
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import OPENAI

CLEAN = "How do I bake sourdough bread?"


@pytest.fixture
def upstream(upstream_pool: UpstreamPool) -> Upstream:
    return upstream_pool.get(OPENAI)  # reset on every get: key, script, queue, records


async def check(upstream: Upstream, texts: list[str], *, key: str | None = None,
                base_url: str | None = None, **options: Any) -> ModerationVerdict | ProviderError:
    """One check with a fresh backend, closed after; the error instead of raising it."""
    moderation = OpenAIModeration(api_key=Secret(key or upstream.api_key),
                                  base_url=base_url or upstream.url + "/v1", **options)
    try:
        return await moderation.check(texts)
    except ProviderError as error:
        return error
    finally:
        await moderation.aclose()


async def test_clean_text_is_not_flagged(upstream: Upstream) -> None:
    assert await check(upstream, [CLEAN]) == ModerationVerdict(False, ())


async def test_one_marked_text_flags_the_whole_check(upstream: Upstream) -> None:
    verdict = await check(upstream, [CLEAN, f"I will {MODERATION_FLAG} you", "Thanks!"])
    assert verdict == ModerationVerdict(True, ("violence",))
    assert len(upstream.requests) == 1  # one request for all the texts


async def test_the_categories_are_the_flagged_ones_sorted(upstream: Upstream) -> None:
    verdict = await check(upstream, [f"{MODERATION_FLAG}:harassment", MODERATION_FLAG])
    assert verdict == ModerationVerdict(True, ("harassment", "violence"))


async def test_the_request_the_vendor_receives(upstream: Upstream) -> None:
    await check(upstream, [CLEAN, "Second text."], model="omni-moderation-2024-09-26")
    sent = upstream.last
    assert sent.path == "/v1/moderations"
    assert sent.json == {"model": "omni-moderation-2024-09-26",
                         "input": [CLEAN, "Second text."]}
    assert sent.headers["authorization"] == f"Bearer {upstream.api_key}"
    await check(upstream, [CLEAN])
    assert upstream.last.json == {"model": "omni-moderation-latest", "input": [CLEAN]}


async def test_no_texts_need_no_request(upstream: Upstream) -> None:
    assert await check(upstream, []) == ModerationVerdict(False, ())
    assert upstream.requests == []


async def test_one_str_is_refused_rather_than_split_into_characters(
        upstream: Upstream) -> None:
    with pytest.raises(TypeError):
        await check(upstream, CLEAN)  # type: ignore[arg-type]
    assert upstream.requests == []


FAULTS = [
    pytest.param(Script(status=500), ProviderUnavailable, id="500"),
    pytest.param(Script(status=503), ProviderUnavailable, id="503"),
    pytest.param(Script(status=429, retry_after="7"), ProviderRateLimited, id="429"),
    pytest.param(Script(status=400), ProviderRejected, id="400"),
    pytest.param(Script(status=404), ProviderMisconfigured, id="404-unknown-model"),
]


@pytest.mark.parametrize(("script", "error_class"), FAULTS)
async def test_each_status_becomes_the_right_project_error(
        upstream: Upstream, script: Script, error_class: type[ProviderError]) -> None:
    upstream.script = script
    error = await check(upstream, [f"secret plans {MODERATION_FLAG}"])
    assert type(error) is error_class
    assert error.status_code == script.status
    assert error.retryable is not issubclass(error_class, ProviderRejected)
    assert error.retry_after == (7.0 if script.retry_after else None)
    assert "secret plans" not in str(error)  # the input never reaches a log line
    assert "server had an error" not in str(error)  # nor the vendor's own words


async def test_a_refused_key_is_misconfigured_and_not_repeated(upstream: Upstream) -> None:
    presented = upstream.api_key
    upstream.api_key = "the-right-key"  # the configured one is now wrong, and gets echoed
    error = await check(upstream, [CLEAN], key=presented)
    assert isinstance(error, ProviderMisconfigured) and not error.retryable
    assert error.status_code == 401
    assert presented in str(upstream.last.headers)  # the fake saw it, and echoed it
    for shown in (str(error), repr(error), error.message, repr(error.args)):
        assert presented[-8:] not in shown and CLEAN not in shown
    assert error.__cause__ is None and error.__suppress_context__


async def test_a_hang_times_out_at_the_timeout(upstream: Upstream) -> None:
    upstream.script = Script(hang_s=3.0)
    started = time.monotonic()
    error = await check(upstream, [CLEAN], timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert type(error) is ProviderUnavailable and error.retryable
    assert error.message == "openai: timed out"
    assert 0.4 < elapsed < 1.5  # not 3 s, and no retry doubling it
    # The vendor sees the backend give up at the timeout, not 3 s later.
    assert await anyio.to_thread.run_sync(upstream.wait_for_outcomes) == ["client_closed"]
    assert len(upstream.requests) == 1


async def test_a_refused_connection_is_unavailable(upstream: Upstream) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    started = time.monotonic()
    error = await check(upstream, [CLEAN], base_url=f"http://127.0.0.1:{closed_port}/v1")
    assert type(error) is ProviderUnavailable and error.retryable
    assert error.message == "openai: connection failed"
    assert time.monotonic() - started < 1.5  # no SDK retries with back-off


async def test_the_fake_answers_in_the_sdks_exact_shape(upstream: Upstream) -> None:
    """The fake's JSON passes the SDK's strict validation, `input` may be one string, and
    anything else is refused as OpenAI refuses it."""
    headers = {"authorization": f"Bearer {upstream.api_key}"}
    async with httpx.AsyncClient(base_url=upstream.url, headers=headers) as client:
        single = await client.post("/v1/moderations", json={"input": MODERATION_FLAG})
        listed = await client.post("/v1/moderations", json={
            "model": "omni-moderation-latest", "input": [CLEAN, MODERATION_FLAG]})
        invalid = await client.post("/v1/moderations", json={"input": [1, 2]})
    assert single.status_code == listed.status_code == 200
    body = listed.json()
    parsed = ModerationCreateResponse.model_validate(body, strict=True)
    assert parsed.id.startswith("modr-") and parsed.model == "omni-moderation-latest"
    assert [result.flagged for result in parsed.results] == [False, True]
    for result in body["results"]:
        for field in ("categories", "category_scores", "category_applied_input_types"):
            assert list(result[field]) == list(MODERATION_CATEGORIES)
    assert single.json()["results"][0]["categories"]["violence"] is True
    assert invalid.status_code == 400
    assert invalid.json()["error"]["param"] == "input"


# A vendor answer in a shape the SDK does not check: what a proxy, a newer API version or a
# broken deployment may send. A flagged result must stay flagged whatever its categories.
ODD_RESULTS = [
    pytest.param({"flagged": True}, ModerationVerdict(True, ()), id="flagged-no-categories"),
    pytest.param({"flagged": True, "categories": None}, ModerationVerdict(True, ()),
                 id="flagged-null-categories"),
    pytest.param({"flagged": True, "categories": ["violence"]}, ModerationVerdict(True, ()),
                 id="flagged-categories-list"),
    pytest.param({"flagged": True, "categories": {"violence": True, "hate": "yes"}},
                 ModerationVerdict(True, ("violence",)), id="flagged-odd-values"),
    pytest.param({"categories": {}}, ProviderUnavailable, id="no-verdict"),
    pytest.param({"flagged": "false"}, ProviderUnavailable, id="verdict-not-a-bool"),
]


@pytest.mark.parametrize(("result", "expected"), ODD_RESULTS)
async def test_an_oddly_shaped_answer_never_unflags_a_flagged_text(
        result: dict[str, Any], expected: ModerationVerdict | type[ProviderError]) -> None:
    async def moderations(request: Request) -> JSONResponse:
        return JSONResponse({"id": "modr-odd", "model": "omni-moderation-latest",
                             "results": [result]})

    app = Starlette(routes=[Route("/v1/moderations", moderations, methods=["POST"])])
    with thread_server(app) as live:
        moderation = OpenAIModeration(api_key=Secret("sk-test"), base_url=live.url + "/v1")
        try:
            verdict: ModerationVerdict | ProviderError = await moderation.check([CLEAN])
        except ProviderError as error:
            verdict = error
        finally:
            await moderation.aclose()
    if isinstance(expected, ModerationVerdict):
        assert verdict == expected
    else:
        assert type(verdict) is expected


@pytest.mark.parametrize("body", [
    pytest.param([], id="a-list"),
    pytest.param("flagged", id="a-string"),
    pytest.param({"id": "modr-odd", "results": {"flagged": True}}, id="results-an-object"),
    pytest.param({"id": "modr-odd"}, id="no-results"),
])
async def test_an_answer_that_is_not_a_moderation_result_is_unavailable(body: object) -> None:
    async def moderations(request: Request) -> JSONResponse:
        return JSONResponse(body)

    app = Starlette(routes=[Route("/v1/moderations", moderations, methods=["POST"])])
    with thread_server(app) as live:
        moderation = OpenAIModeration(api_key=Secret("sk-test"), base_url=live.url + "/v1")
        try:
            with pytest.raises(ProviderUnavailable,
                               match=r"^openai: malformed moderation response$"):
                await moderation.check([CLEAN])
        finally:
            await moderation.aclose()


async def test_a_bug_in_the_backend_is_raised_as_it_is(
        upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an unanswered check, which a policy may let through: a bug, with its stack."""
    def verdict(*args: object) -> NoReturn:
        raise TypeError("a backend bug")

    monkeypatch.setattr(openai_moderation, "_verdict", verdict)
    moderation = OpenAIModeration(api_key=Secret(upstream.api_key),
                                  base_url=upstream.url + "/v1")
    try:
        with pytest.raises(TypeError, match="a backend bug"):
            await moderation.check([CLEAN])
    finally:
        await moderation.aclose()
    assert len(upstream.requests) == 1  # the vendor answered; nothing went wrong there
