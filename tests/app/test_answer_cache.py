"""The answer cache end to end: the service in front of a real (fake) OpenAI-protocol vendor,
configured the way an operator would, with every lookup and write going through the HTTP API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from config.settings import Settings
from tests.app.answer_cache_common import (
    ANSWER,
    DEGRADED,
    QUESTION,
    ROUTE,
    Writes,
    answer_of,
    ask,
    chats,
    settings,
    stored,
)
from tests.logcapture import captured_logs
from tests.servers import FAST_DEMO, app_server
from tests.tenant_keys import ACME_KEY, ADMIN_KEY, GLOBEX_KEY, bearer
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, AWS_TEST_ENV, BEDROCK, OPENAI


def test_faq_mode_serves_the_same_question_from_the_cache(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    with captured_logs() as logs, app_server(settings(faq_vendor, CACHE_MODE="first")) as live:
        first = ask(client, live, QUESTION)
        writes(1)
        # Spacing and case do not make a new question.
        again = ask(client, live, "  what is the REFUND policy   for annual plans?")
    assert answer_of(first) == answer_of(again) == "".join(ANSWER)
    assert chats(faq_vendor) == 1
    assert first[-1]["model_route"] == ROUTE and "cached" not in first[-1]
    meta, done = again[0], again[-1]
    assert meta["model_route"] == "cache"
    assert done["type"] == "done" and done["model_route"] == "cache"
    assert (done["cached"], done["match"], done["similarity"]) == (True, "exact", 1.0)
    assert 0 <= done["age_s"] < 5
    assert done["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert len([e for e in again if e["type"] == "token"]) > 1  # streamed like a model's
    (hit,) = logs.records("cache_hit")
    assert (hit["kind"], hit["mode"], hit["answer_route"]) == ("exact", "first", ROUTE)
    assert "refund" not in str(hit).lower()  # never the text
    end = logs.records("request_end")[-1]
    assert (end["model_route"], end["fallback_tier"], end["cache_match"]) == (
        "cache", "cache", "exact")


def test_a_near_duplicate_is_served_and_a_different_question_is_not(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    with app_server(settings(faq_vendor, CACHE_MODE="first")) as live:
        ask(client, live, QUESTION)
        writes(1)
        near = ask(client, live, "What is the refund policy for annual plans, please?")
        other = ask(client, live, "How do I reset my password?")
    assert near[-1]["match"] == "lexical" and 0.8 <= near[-1]["similarity"] < 1
    assert answer_of(near) == "".join(ANSWER)
    assert other[-1]["model_route"] == ROUTE and "cached" not in other[-1]
    assert chats(faq_vendor) == 2


def test_with_every_route_down_a_cached_answer_then_the_static_copy(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    with captured_logs() as logs, app_server(settings(faq_vendor, MAX_ATTEMPTS="2")) as live:
        fresh = ask(client, live, QUESTION)  # fallback mode, the default: the model answers
        writes(1)
        again = ask(client, live, QUESTION)  # and answers again while it is up
        faq_vendor.script = Script(status=503)
        cached = ask(client, live, QUESTION.lower() + " ")
        static = ask(client, live, "Which regions do you ship to?")
    assert fresh[-1]["model_route"] == again[-1]["model_route"] == ROUTE
    assert cached[0]["model_route"] == "cache" and cached[-1]["cached"] is True
    assert answer_of(cached) == "".join(ANSWER)
    assert static[-1]["type"] == "error" and static[-1]["message"] == DEGRADED
    used = logs.records("fallback_used")
    assert [(u["tier"], u["to_route"]) for u in used] == [("cache", "cache"), ("static", None)]


def test_two_tenants_never_share_an_answer(faq_vendor: Upstream, client: httpx.Client,
                                          writes: Writes, tmp_path: Path) -> None:
    config = settings(faq_vendor, tmp_path, acme={"cache": "first"}, globex={"cache": "first"})
    with app_server(config) as live:
        ask(client, live, QUESTION, ACME_KEY)
        writes(1)
        globex = ask(client, live, QUESTION, GLOBEX_KEY)
        acme = ask(client, live, QUESTION, ACME_KEY)
    assert globex[-1]["model_route"] == ROUTE and "cached" not in globex[-1]
    assert acme[-1]["cached"] is True
    assert chats(faq_vendor) == 2


def test_a_tenant_with_the_cache_off_is_neither_served_nor_stored(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes, tmp_path: Path) -> None:
    config = settings(faq_vendor, tmp_path, acme={"cache": "off"}, CACHE_MODE="first")
    with app_server(config) as live:
        ask(client, live, QUESTION, GLOBEX_KEY)
        writes(1)
        before = stored()
        for _ in range(2):
            assert "cached" not in ask(client, live, QUESTION, ACME_KEY)[-1]
        time.sleep(0.2)  # time enough for a write that should not happen
    assert stored() == before and chats(faq_vendor) == 3


def test_redacted_answers_and_personal_questions_are_never_cached(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    faq_vendor.script = Script(tokens=("Write to jane.doe@example.com", " for refunds."))
    with app_server(settings(faq_vendor, CACHE_MODE="first")) as live:
        redacted = ask(client, live, QUESTION)
        assert "jane.doe" not in answer_of(redacted)
        assert "cached" not in ask(client, live, QUESTION)[-1]
        faq_vendor.script = Script(tokens=ANSWER)
        personal = "My card is 4111 1111 1111 1111, what is the refund policy?"
        ask(client, live, personal)
        assert "cached" not in ask(client, live, personal)[-1]
        ask(client, live, QUESTION)  # a clean answer to a clean question is stored
        writes(1)
        assert ask(client, live, QUESTION)[-1]["cached"] is True
    assert chats(faq_vendor) == 5


def test_cut_off_and_failed_answers_are_never_cached(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    faq_vendor.script = Script(tokens=ANSWER, finish="length")
    with app_server(settings(faq_vendor, CACHE_MODE="first", MAX_ATTEMPTS="1")) as live:
        ask(client, live, QUESTION)
        faq_vendor.script = Script(tokens=ANSWER, drop_after=1)
        ask(client, live, QUESTION)
        faq_vendor.script = Script(tokens=ANSWER)
        assert "cached" not in ask(client, live, QUESTION)[-1]
        writes(1)
    assert chats(faq_vendor) == 3


def test_an_answer_longer_than_the_request_allows_is_not_served(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    with app_server(settings(faq_vendor, CACHE_MODE="first")) as live:
        ask(client, live, QUESTION)
        writes(1)
        short = ask(client, live, QUESTION, max_tokens=5)  # the faq_vendor reported 9
    assert "cached" not in short[-1] and chats(faq_vendor) == 2


def test_entries_expire_after_the_ttl(faq_vendor: Upstream, client: httpx.Client,
                                      writes: Writes) -> None:
    with app_server(settings(faq_vendor, CACHE_MODE="first", CACHE_TTL_S="1")) as live:
        ask(client, live, QUESTION)
        writes(1)
        assert ask(client, live, QUESTION)[-1]["cached"] is True
        time.sleep(1.1)
        assert "cached" not in ask(client, live, QUESTION)[-1]
    assert chats(faq_vendor) == 2


def test_an_admin_clears_a_tenants_cache(faq_vendor: Upstream, client: httpx.Client,
                                         writes: Writes, tmp_path: Path) -> None:
    config = settings(faq_vendor, tmp_path, CACHE_MODE="first")
    with captured_logs() as logs, app_server(config) as live:
        ask(client, live, QUESTION, ACME_KEY)
        ask(client, live, QUESTION, GLOBEX_KEY)
        writes(2)
        url = live.url + "/admin/cache/acme"
        refused = client.delete(url, headers=bearer(ACME_KEY))
        unknown = client.delete(live.url + "/admin/cache/initech", headers=bearer(ADMIN_KEY))
        cleared = client.delete(url, headers=bearer(ADMIN_KEY))
        acme = ask(client, live, QUESTION, ACME_KEY)
        globex = ask(client, live, QUESTION, GLOBEX_KEY)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert unknown.status_code == 404
    assert cleared.status_code == 200 and cleared.json() == {"tenant": "acme", "cleared": 1}
    assert "cached" not in acme[-1] and globex[-1]["cached"] is True
    assert logs.records("cache_cleared")[0]["tenant_id"] == "acme"


def test_a_cache_hit_is_billed_at_the_configured_price(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    with captured_logs() as logs, app_server(settings(
            faq_vendor, CACHE_MODE="first", CACHE_HIT_PRICE_USD="0.0005")) as live:
        ask(client, live, QUESTION)
        writes(1)
        ask(client, live, QUESTION)
    hit = logs.records("request_end")[-1]
    assert (hit["input_tokens"], hit["output_tokens"], hit["cost_usd"]) == (0, 0, 0.0005)


def test_the_collected_and_openai_endpoints_say_cached(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    with app_server(settings(faq_vendor, CACHE_MODE="first")) as live:
        ask(client, live, QUESTION)
        writes(1)
        collected = client.post(live.url + "/chat", json={"message": QUESTION}).json()
        openai = client.post(live.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}]}).json()
    assert collected["answer"] == "".join(ANSWER)
    assert (collected["model_route"], collected["cached"], collected["match"]) == (
        "cache", True, "exact")
    assert openai["choices"][0]["message"]["content"] == "".join(ANSWER)
    assert openai["model"] == "cache"
    assert chats(faq_vendor) == 1


def test_a_pinned_route_never_uses_the_cache(faq_vendor: Upstream, client: httpx.Client,
                                             writes: Writes, tmp_path: Path) -> None:
    config = settings(faq_vendor, tmp_path, CACHE_MODE="first")
    with app_server(config) as live:
        ask(client, live, QUESTION, ACME_KEY)
        writes(1)
        response = client.post(live.url + "/chat", json={"message": QUESTION},
                               headers={**bearer(ADMIN_KEY), "X-Route": ROUTE})
    assert response.json()["model_route"] == ROUTE and chats(faq_vendor) == 2


def test_a_conversation_that_went_differently_is_not_served(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    def conversation(earlier: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": earlier},
                             {"role": "assistant", "content": "Sure."},
                             {"role": "user", "content": QUESTION}]}
    with app_server(settings(faq_vendor, CACHE_MODE="first")) as live:
        url = live.url + "/chat"
        client.post(url, json=conversation("I am on the Pro plan."))
        writes(1)
        same = client.post(url, json=conversation("I am on the Pro plan.")).json()
        other = client.post(url, json=conversation("I am on the Free plan.")).json()
    assert same.get("cached") is True and "cached" not in other


def test_a_cache_answer_to_the_static_copy_under_anthropic_fallback(
        upstream_pool: UpstreamPool, client: httpx.Client, writes: Writes) -> None:
    """With a fallback route, the cache comes after every route: the fallback model answers
    first, and the cache only when both are down."""
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    primary.script = fallback.script = Script(tokens=ANSWER)
    values = {**FAST_DEMO, **OPENAI.env(primary), "RETRY_BASE_S": "0.01", "MAX_ATTEMPTS": "1",
              **{k: v for k, v in ANTHROPIC.env(fallback).items()
                 if k not in ("LLM_PROVIDER", "PRIMARY_MODEL")},
              "FALLBACK_MODEL": "anthropic/claude-3-5-haiku-20241022"}
    with app_server(Settings.from_env(values)) as live:
        ask(client, live, QUESTION)
        writes(1)
        primary.script = Script(status=503)
        by_fallback = ask(client, live, QUESTION)
        fallback.script = Script(status=529)
        by_cache = ask(client, live, QUESTION)
    assert by_fallback[0]["model_route"] == "anthropic/claude-3-5-haiku-20241022"
    assert by_cache[0]["model_route"] == "cache" and by_cache[-1]["cached"] is True


def test_with_an_embedding_model_a_rephrased_question_is_a_semantic_hit(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    config = settings(faq_vendor, CACHE_MODE="first",
                      CACHE_EMBEDDING_MODEL="openai/text-embedding-3-small")
    with captured_logs() as logs, app_server(config) as live:
        ask(client, live, QUESTION)
        writes(1)
        # The same words in another order: far apart as word pairs, one meaning.
        rephrased = ask(client, live, "For annual plans, the refund policy is what?")
        other = ask(client, live, "How do I reset my password?")
    assert (rephrased[-1]["cached"], rephrased[-1]["match"]) == (True, "semantic")
    assert rephrased[-1]["similarity"] >= 0.95
    assert "cached" not in other[-1]
    embedded = [r.json for r in faq_vendor.requests if r.path.endswith("/embeddings")]
    # One at start-up, then one per lookup that got past the exact match; a miss's vector is
    # kept for its write.
    assert len(embedded) == 4 and {e["model"] for e in embedded} == {"text-embedding-3-small"}
    assert {e["dimensions"] for e in embedded} == {256}
    assert logs.records("cache_hit")[0]["kind"] == "semantic"


def test_titan_embeddings_on_bedrock_serve_a_rephrased_question(
        upstream_pool: UpstreamPool, client: httpx.Client, writes: Writes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    bedrock = upstream_pool.get(BEDROCK)
    bedrock.script = Script(tokens=ANSWER)
    config = Settings.from_env({**FAST_DEMO, **BEDROCK.env(bedrock), "CACHE_MODE": "first",
                                "CACHE_EMBEDDING_MODEL": "bedrock/amazon.titan-embed-text-v2:0",
                                "CACHE_EMBEDDING_DIMENSIONS": "512"})
    with app_server(config) as live:
        ask(client, live, QUESTION)
        writes(1)
        rephrased = ask(client, live, "For annual plans, the refund policy is what?")
    assert (rephrased[-1]["cached"], rephrased[-1]["match"]) == (True, "semantic")
    invoked = [r.json for r in bedrock.requests if r.path.endswith("/invoke")]
    assert invoked and all(body["dimensions"] == 512 for body in invoked)


def test_a_failing_embedding_model_falls_back_to_lexical_matching_never_an_error(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    faq_vendor.embedding_status = 503
    config = settings(faq_vendor, CACHE_MODE="first",
                      CACHE_EMBEDDING_MODEL="openai/text-embedding-3-small")
    with captured_logs() as logs, app_server(config) as live:
        ask(client, live, QUESTION)
        writes(1)
        near = ask(client, live, "What is the refund policy for annual plans, please?")
        faq_vendor.embedding_status = None
        faq_vendor.embedding_delay_s = 5.0  # and a hanging one: the lookup does not wait
        started = time.monotonic()
        hung = ask(client, live, "How do I reset my password?")
        waited = time.monotonic() - started
    assert (near[-1]["cached"], near[-1]["match"]) == (True, "lexical")
    assert hung[-1]["type"] == "done" and "cached" not in hung[-1]
    assert waited < 2.0
    assert logs.records("cache_unavailable")[0]["operation"] == "embed"


def fallbacks(tier: str) -> float:
    return REGISTRY.get_sample_value("hello_ship_fallbacks_total",
                                     {"route": "cache", "tier": tier}) or 0.0


def test_faq_hits_are_not_fallbacks_and_fallback_hits_are(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes, tmp_path: Path) -> None:
    config = settings(faq_vendor, tmp_path, acme={"cache": "first"}, MAX_ATTEMPTS="1")
    with app_server(config) as live:
        ask(client, live, QUESTION, ACME_KEY)
        ask(client, live, QUESTION, GLOBEX_KEY)  # globex: fallback, the default
        writes(2)
        before = fallbacks("cache")
        assert ask(client, live, QUESTION, ACME_KEY)[-1]["cached"] is True
        assert fallbacks("cache") == before
        faq_vendor.script = Script(status=503)
        assert ask(client, live, QUESTION, GLOBEX_KEY)[-1]["cached"] is True
        assert fallbacks("cache") == before + 1


def test_a_request_with_stop_sequences_neither_reads_nor_feeds_the_cache(
        faq_vendor: Upstream, client: httpx.Client, writes: Writes) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}]}
    with app_server(settings(faq_vendor, CACHE_MODE="first")) as live:
        url = live.url + "/v1/chat/completions"
        client.post(url, json=body)
        writes(1)
        before = stored()
        stopped = client.post(url, json={**body, "stop": ["."]}).json()
        time.sleep(0.2)  # time enough for a write that should not happen
    assert stopped["model"] == ROUTE and stored() == before
    assert chats(faq_vendor) == 2
