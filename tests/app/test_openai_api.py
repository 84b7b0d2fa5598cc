"""OpenAI's Chat Completions API with the official `openai` SDK as the client, sync and async,
in front of the wire-exact fake vendors: what a team gets by changing only a base URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from tests.logcapture import captured_logs
from tests.servers import FAST_DEMO, ThreadServer, app_server
from tests.tenant_keys import ACME_KEY, GLOBEX_KEY, config_env, tenants_toml
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, OPENAI, Vendor

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
PRIMARY = "openai/gpt-4o-mini"
FALLBACK = "anthropic/claude-3-5-haiku-20241022"




_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Each SDK client's connections are closed with its test, not left to the collector."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def sdk(live: ThreadServer, key: str = "unused-in-open-mode", retries: int = 0) -> openai.OpenAI:
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=retries,
                           timeout=15)
    _OPEN.append(client)
    return client


def chunks_of(stream: Any) -> tuple[str, list[Any]]:
    seen = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    return text, seen


def completions(upstream: Upstream) -> list[Any]:
    return [r for r in upstream.requests if not r.path.endswith("/models")]


def test_text_usage_and_finish_match_the_vendors_streamed_or_not(vendor: Vendor,
                                                                 upstream: Upstream) -> None:
    with app_server(Settings.from_env({**FAST_DEMO, **vendor.env(upstream)})) as live:
        client = sdk(live)
        whole = client.chat.completions.create(model="default", messages=HELLO)  # type: ignore[arg-type]
        text, chunks = chunks_of(client.chat.completions.create(
            model="default", messages=HELLO, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}))
    route = f"{vendor.provider}/{vendor.model}"
    assert whole.object == "chat.completion" and whole.model == route
    assert whole.choices[0].message.content == "Hello, world!" == text
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens,
            whole.usage.total_tokens) == (17, 9, 26)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 26
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {route} and len({c.id for c in chunks}) == 1
    # (a stream another test closed may report its end to the shared fake after its reset)
    assert upstream.outcomes.count("completed") == 2


def test_the_async_client_streams_and_collects_too(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)

    async def run(url: str) -> tuple[str, str, int]:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as c:
            whole = await c.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
            stream = await c.chat.completions.create(model="gpt-4o-mini", messages=HELLO,  # type: ignore[arg-type]
                                                     stream=True)
            text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                            if chunk.choices])
            assert whole.usage is not None
            return whole.choices[0].message.content or "", text, whole.usage.total_tokens

    with app_server(Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream)})) as live:
        assert asyncio.run(run(live.url)) == ("Hello, world!", "Hello, world!", 26)


def test_sampling_parameters_reach_the_vendor(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    with app_server(Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream)})) as live:
        sdk(live).chat.completions.create(
            model="default", messages=[{"role": "user", "content": [  # content parts
                {"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]}],
            temperature=0.2, top_p=0.9, stop=["\n\n"], seed=7, user="end-user-1",
            max_completion_tokens=50)
    body = completions(upstream)[-1].json
    assert body["messages"] == [{"role": "user", "content": "Say\nhello."}]
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"], body["user"]) == (
        0.2, 0.9, ["\n\n"], 7, "end-user-1")
    assert body["max_tokens"] == 50  # the name servers other than OpenAI's own know


def test_a_small_max_tokens_ends_with_finish_reason_length(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(finish="length")
    with app_server(Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream)})) as live:
        client = sdk(live)
        whole = client.chat.completions.create(model="default", messages=HELLO, max_tokens=4)  # type: ignore[arg-type]
        _, chunks = chunks_of(client.chat.completions.create(
            model="default", messages=HELLO, max_tokens=4, stream=True))  # type: ignore[arg-type]
    assert whole.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert {r.json["max_tokens"] for r in completions(upstream)} == {4}


def test_a_vendor_failing_halfway_raises_in_the_sdks_iterator_after_the_partial_text(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(tokens=("Hello.", " Here", " is", " more."), drop_after=2)
    with app_server(Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream)})) as live:
        stream = sdk(live).chat.completions.create(model="default", messages=HELLO,  # type: ignore[arg-type]
                                                   stream=True)
        received: list[str] = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello. Here"  # every word the model got to, then the error
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "stream_interrupted"
    assert raised.value.body["tokens_emitted"] >= 1 and raised.value.body["retryable"] is True


def test_every_route_down_before_the_first_token_is_a_503_the_sdk_retries(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(status=503, retry_after="1")
    env = {**FAST_DEMO, **OPENAI.env(upstream), "MAX_ATTEMPTS": "1",
           "DEGRADED_MESSAGE": "Back in a minute."}
    with app_server(Settings.from_env(env)) as live:
        with pytest.raises(openai.InternalServerError) as raised:
            sdk(live).chat.completions.create(model="default", messages=HELLO, stream=True)  # type: ignore[arg-type]
        asked = time.monotonic()
        upstream.queue = [Script(status=503, retry_after="1"), Script()]
        whole = sdk(live, retries=1).chat.completions.create(model="default", messages=HELLO)  # type: ignore[arg-type]
        took = time.monotonic() - asked
    assert raised.value.status_code == 503
    assert raised.value.response.headers["retry-after"] == "1"
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "provider_unavailable"
    assert raised.value.body["type"] == "server_error"
    assert raised.value.body["message"] == "Back in a minute."  # the degraded copy
    assert whole.choices[0].message.content == "Hello, world!"
    assert took >= 1.0  # the SDK waited as Retry-After said before its retry


def test_closing_the_sdk_stream_cancels_the_vendor_call(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(tokens=tuple(f" t{n}." for n in range(500)), token_delay_s=0.01)
    with captured_logs() as logs, \
            app_server(Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream)})) as live:
        stream = sdk(live).chat.completions.create(model="default", messages=HELLO,  # type: ignore[arg-type]
                                                   stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        stream.close()
        assert upstream.wait_for_outcomes(timeout=3) == ["client_closed"]
    (end,) = logs.records("request_end")
    assert end["status"] == "client_disconnected" and end["stream"] is True


def test_a_redacted_value_never_appears_in_any_chunk() -> None:
    email = "jane.doe@example.com"
    echo = f"/echo Write to {email} today, please."
    with app_server(Settings.from_env(FAST_DEMO)) as live, httpx.Client(timeout=10) as http:
        raw = http.post(live.url + "/v1/chat/completions", json={
            "model": "default", "stream": True,
            "messages": [{"role": "user", "content": echo}]}).text
        whole = sdk(live).chat.completions.create(
            model="default", messages=[{"role": "user", "content": echo}])
    assert email not in raw and "jane" not in raw
    assert "[redacted:email]" in raw and raw.rstrip().endswith("data: [DONE]")
    assert whole.choices[0].message.content == "Write to [redacted:email] today, please."


def test_a_fallback_answer_reaches_the_client_like_any_other(
        upstream_pool: UpstreamPool) -> None:
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    primary.script = Script(status=503)
    env = {**FAST_DEMO, **OPENAI.env(primary), "RETRY_BASE_S": "0.05",
           **{k: v for k, v in ANTHROPIC.env(fallback).items()
              if k not in ("LLM_PROVIDER", "PRIMARY_MODEL")}, "FALLBACK_MODEL": FALLBACK}
    with app_server(Settings.from_env(env)) as live:
        text, chunks = chunks_of(sdk(live).chat.completions.create(
            model="default", messages=HELLO, stream=True))  # type: ignore[arg-type]
        pinned = sdk(live).chat.completions.create(model=PRIMARY, messages=HELLO)  # type: ignore[arg-type]
    assert text == "Hello, world!" and chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model == FALLBACK  # the route that answered, for whoever looks
    # Asking for the primary by name still falls back to the routes after it.
    assert pinned.choices[0].message.content == "Hello, world!" and pinned.model == FALLBACK


def tenant_settings(tmp_path: Path, primary: Upstream, fallback: Upstream,
                    **acme: object) -> Settings:
    toml = (tenants_toml(acme={"models": ["fast"], **acme}) + "\n\n"
            f'[[routes]]\nprovider = "openai"\nmodel = "gpt-4o-mini"\n'
            f'base_url = "{primary.url}/v1"\napi_key_env = "OPENAI_API_KEY"\n\n'
            f'[[routes]]\nprovider = "anthropic"\nmodel = "claude-3-5-haiku-20241022"\n'
            f'base_url = "{fallback.url}"\naliases = ["fast"]\n')
    return Settings.from_env({**FAST_DEMO, **config_env(tmp_path, toml),
                              "OPENAI_API_KEY": primary.api_key,
                              "ANTHROPIC_API_KEY": fallback.api_key})


def test_a_tenant_uses_only_the_models_its_section_lists(tmp_path: Path,
                                                         upstream_pool: UpstreamPool) -> None:
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    with app_server(tenant_settings(tmp_path, primary, fallback)) as live:
        acme, globex = sdk(live, ACME_KEY), sdk(live, GLOBEX_KEY)
        acme_models = [m.id for m in acme.models.list()]
        globex_models = [m.id for m in globex.models.list()]
        refused = []
        for model in ("default", PRIMARY, "gpt-4o-mini", "no-such-model"):
            with pytest.raises(openai.NotFoundError) as raised:
                acme.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
            refused.append(raised.value)
        fast = acme.chat.completions.create(model="fast", messages=HELLO)  # type: ignore[arg-type]
        by_route = acme.chat.completions.create(model=FALLBACK, messages=HELLO)  # type: ignore[arg-type]
        globex_default = globex.chat.completions.create(model="default", messages=HELLO)  # type: ignore[arg-type]
    assert acme_models == [FALLBACK, "fast", "claude-3-5-haiku-20241022"]
    assert globex_models == ["default", PRIMARY, FALLBACK, "fast", "gpt-4o-mini",
                             "claude-3-5-haiku-20241022"]
    for error in refused:
        assert error.status_code == 404 and isinstance(error.body, dict)
        assert error.body["code"] == "model_not_found" and error.body["param"] == "model"
        assert "no-such-model" not in str(error.body)  # caller input is not repeated
    assert fast.model == by_route.model == FALLBACK
    assert globex_default.model == PRIMARY
    assert len(completions(primary)) == 1  # globex's default; acme never reached it


def test_a_tenant_never_falls_back_to_a_route_it_may_not_use(
        tmp_path: Path, upstream_pool: UpstreamPool) -> None:
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    fallback.script = Script(status=529)
    settings = tenant_settings(tmp_path, primary, fallback, models=["fast"])
    with app_server(settings) as live, pytest.raises(openai.InternalServerError):
        sdk(live, ACME_KEY).chat.completions.create(model="fast", messages=HELLO)  # type: ignore[arg-type]
    assert completions(primary) == []


def test_each_refusal_is_the_sdks_error_class(tmp_path: Path) -> None:
    toml = tenants_toml(acme={"max_streams": 1})
    with app_server(Settings.from_env({**FAST_DEMO, **config_env(tmp_path, toml)})) as live:
        with pytest.raises(openai.AuthenticationError) as no_key:
            sdk(live, "hs_not-a-key").chat.completions.create(model="default", messages=HELLO)  # type: ignore[arg-type]
        client = sdk(live, ACME_KEY)
        with pytest.raises(openai.BadRequestError) as two:
            client.chat.completions.create(model="default", messages=HELLO, n=2)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as tools:
            client.chat.completions.create(model="default", messages=HELLO, tools=[{  # type: ignore[arg-type]
                "type": "function", "function": {"name": "f", "parameters": {}}}])
        with pytest.raises(openai.BadRequestError) as image:
            client.chat.completions.create(model="default", messages=[{"role": "user", "content": [  # type: ignore[list-item]
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=HELLO)  # type: ignore[arg-type]
    assert no_key.value.status_code == 401 and isinstance(no_key.value.body, dict)
    assert no_key.value.body["type"] == "authentication_error"
    assert no_key.value.body["request_id"].startswith("req_")
    for error, param in ((two, "n"), (tools, "tools"), (image, "messages[0].content[0].type")):
        assert isinstance(error.value.body, dict)
        assert error.value.body["param"] == param
        assert error.value.body["code"] == "unsupported_parameter"


def test_a_rate_limit_is_a_429_whose_retry_after_the_sdk_honours(tmp_path: Path) -> None:
    toml = tenants_toml(acme={"max_streams": 1})
    env = {**FAST_DEMO, **config_env(tmp_path, toml), "DEMO_TOKEN_DELAY_MS": "20",
           "DEMO_ANSWER_TOKENS": "30"}  # the first answer takes about 0.6 s
    with captured_logs() as logs, app_server(Settings.from_env(env)) as live:
        holding = sdk(live, ACME_KEY).chat.completions.create(
            model="default", messages=HELLO, stream=True)  # type: ignore[arg-type]
        next(iter(holding))  # the tenant's one stream is taken
        with pytest.raises(openai.RateLimitError) as refused:
            sdk(live, ACME_KEY).chat.completions.create(model="default", messages=HELLO)  # type: ignore[arg-type]
        asked = time.monotonic()
        retried = sdk(live, ACME_KEY, retries=2).chat.completions.create(
            model="default", messages=HELLO)  # type: ignore[arg-type]
        took = time.monotonic() - asked
        holding.close()
    assert refused.value.status_code == 429
    wait = float(refused.value.response.headers["retry-after"])
    assert wait >= 1 and isinstance(refused.value.body, dict)
    assert refused.value.body["type"] == "rate_limit_error"
    assert retried.choices[0].message.content  # answered once the slot was free
    assert took >= wait * 0.9  # the SDK waited as told before asking again
    assert len([r for r in logs.records("request_rejected") if r["status"] == 429]) >= 2


def test_answers_are_counted_under_their_own_endpoint_label() -> None:
    with app_server(Settings.from_env(FAST_DEMO)) as live, httpx.Client(timeout=10) as http:
        client = sdk(live)
        client.chat.completions.create(model="default", messages=HELLO)  # type: ignore[arg-type]
        chunks_of(client.chat.completions.create(model="default", messages=HELLO,  # type: ignore[arg-type]
                                                 stream=True))
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="default", messages=HELLO, n=3)  # type: ignore[arg-type]
        scraped = http.get(live.url + "/metrics").text
    counts = {(s.labels["endpoint"], s.labels["outcome"]): s.value
              for family in text_string_to_metric_families(scraped)
              if family.name == "hello_ship_requests" for s in family.samples
              if s.name.endswith("_total")}
    assert counts[("openai", "ok")] >= 1 and counts[("openai_stream", "ok")] >= 1
    assert counts[("openai", "rejected")] >= 1


def test_unknown_paths_and_bad_bodies_answer_in_openais_error_shape() -> None:
    with app_server(Settings.from_env(FAST_DEMO)) as live, httpx.Client(timeout=10) as http:
        missing = http.get(live.url + "/v1/embeddings")
        not_json = http.post(live.url + "/v1/chat/completions", content=b"{oops",
                             headers={"content-type": "application/json"})
        unknown = http.post(live.url + "/v1/chat/completions",
                            json={"model": "default", "messages": HELLO, "frobnicate": 1})
        ok = http.post(live.url + "/v1/chat/completions", json={"model": "default",
                                                                  "messages": HELLO})
    for response, status in ((missing, 404), (not_json, 400), (unknown, 400)):
        error = response.json()["error"]
        assert response.status_code == status
        assert set(error) >= {"message", "type", "param", "code", "request_id"}
        assert error["type"] == "invalid_request_error"
    assert unknown.json()["error"]["param"] == "frobnicate"
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]



def test_chat_takes_the_same_sampling_fields(upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    with app_server(Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream)})) as live, \
            httpx.Client(timeout=10) as http:
        answer = http.post(live.url + "/chat", json={"message": "Say hello.", "temperature": 1,
                                                     "top_p": 0.5, "stop": "\n", "seed": 1})
        refused = http.post(live.url + "/chat", json={"message": "Hi", "temperature": 9})
    body = completions(upstream)[-1].json
    assert answer.status_code == 200
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"]) == (1, 0.5, ["\n"], 1)
    assert "user" not in body
    assert refused.status_code == 422 and len(completions(upstream)) == 1


def test_heartbeats_while_the_model_is_quiet_are_skipped_by_the_sdk() -> None:
    env = {**FAST_DEMO, "HEARTBEAT_S": "0.05", "DEMO_TTFT_MS": "300", "DEMO_TOKEN_DELAY_MS": "120",
           "DEMO_ANSWER_TOKENS": "8"}
    with app_server(Settings.from_env(env)) as live, httpx.Client(timeout=10) as http:
        raw = http.post(live.url + "/v1/chat/completions", json={
            "model": "default", "stream": True, "messages": HELLO}).text
        text, chunks = chunks_of(sdk(live).chat.completions.create(
            model="default", messages=HELLO, stream=True))  # type: ignore[arg-type]
    # None before the answer's first text (nothing was sent to keep alive), some after.
    assert raw.startswith("data: ") and ": heartbeat\n\n" in raw
    assert raw.index('"content":"Hello') < raw.index(": heartbeat")
    assert text.startswith("Hello from the hello-ship demo model")
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_chat_answers_a_tenant_with_models_only_from_its_routes(
        tmp_path: Path, upstream_pool: UpstreamPool) -> None:
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    with app_server(tenant_settings(tmp_path, primary, fallback)) as live, \
            httpx.Client(timeout=10) as http:
        acme = http.post(live.url + "/chat", json={"message": "Say hello."},
                         headers={"Authorization": f"Bearer {ACME_KEY}"})
        globex = http.post(live.url + "/chat", json={"message": "Say hello."},
                           headers={"Authorization": f"Bearer {GLOBEX_KEY}"})
    assert acme.json()["model_route"] == FALLBACK  # "fast" is all acme may use
    assert globex.json()["model_route"] == PRIMARY
    assert len(completions(primary)) == 1


def test_an_answer_refused_by_the_output_guard_before_any_text_is_a_502() -> None:
    env = {**FAST_DEMO, "GUARD_OUTPUT_PII": "block"}
    card = "4111 1111 1111 1111"
    with app_server(Settings.from_env(env)) as live:
        with pytest.raises(openai.InternalServerError) as raised:
            sdk(live).chat.completions.create(model="default", stream=True, messages=[
                {"role": "user", "content": f"/echo {card} is my card."}])
        streamed = sdk(live).chat.completions.create(model="default", stream=True, messages=[
            {"role": "user", "content": f"/echo Fine. Then {card} leaks."}])
        received: list[str] = []
        with pytest.raises(openai.APIError) as mid_stream:
            for chunk in streamed:
                received.append(chunk.choices[0].delta.content or "")
    assert raised.value.status_code == 502 and isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "output_blocked"
    assert "".join(received).startswith("Fine.") and "4111" not in "".join(received)
    assert isinstance(mid_stream.value.body, dict)
    assert mid_stream.value.body["code"] == "output_blocked"


def test_an_sdks_own_answer_message_can_be_sent_back() -> None:
    with app_server(Settings.from_env(FAST_DEMO)) as live:
        client = sdk(live)
        first = client.chat.completions.create(model="default", messages=HELLO)  # type: ignore[arg-type]
        turns = [*HELLO, first.choices[0].message.model_dump(),
                 {"role": "user", "content": "And again?", "name": None}]
        again = client.chat.completions.create(model="default", messages=turns)  # type: ignore[arg-type]
    assert again.choices[0].message.content


def test_a_null_max_completion_tokens_leaves_max_tokens_in_force() -> None:
    with app_server(Settings.from_env(FAST_DEMO)) as live, httpx.Client(timeout=10) as http:
        answer = http.post(live.url + "/v1/chat/completions", json={
            "model": "default", "messages": HELLO, "max_completion_tokens": None,
            "max_tokens": 3}).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(("content", "body", "status"), [
    ("application/json", b"[1]", 400),  # JSON, but not an object: /chat says 422
    ("text/plain", b"{}", 415),
])
def test_bodies_refused_at_the_edge_have_openais_status_and_type(
        content: str, body: bytes, status: int) -> None:
    with app_server(Settings.from_env(FAST_DEMO)) as live, httpx.Client(timeout=10) as http:
        response = http.post(live.url + "/v1/chat/completions", content=body,
                             headers={"content-type": content})
    assert response.status_code == status
    assert response.json()["error"]["type"] == "invalid_request_error"
