"""`/metrics` as an on-call engineer reads it: exact counts after a known mix of requests.

The mix runs against `hello-ship serve --workers 2` in front of wire-exact OpenAI and
Anthropic fakes, so every number also proves the workers' values are summed (multiprocess
mode); the scrape is parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.factory import create_app
from config.settings import Settings, SettingsError
from providers.errors import ProviderUnavailable
from tenancy.identity import hashed_form
from tests.fakes import Fail, ScriptedProvider, Sleep
from tests.logcapture import captured_logs
from tests.servers import FAST_DEMO, ServiceProcess, service_process, thread_server
from tests.sse import parse_sse
from tests.telemetry.test_alert_rules import exposed_names
from tests.tenant_keys import ACME_KEY, ADMIN_KEY, GLOBEX_KEY, bearer, config_env, tenants_toml
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, OPENAI

PRIMARY = "openai/gpt-4o-mini"
FALLBACK = "anthropic/claude-3-5-haiku-20241022"
MARKER = "zebra-quartz-4417"  # user text that must never become a label
SCRAPE_KEY = "hs_scrape_0123456789abcdef"

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(url: str, key: str | None = ADMIN_KEY) -> dict[Sample, float]:
    headers = bearer(key) if key else {}
    response = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def series(samples: dict[Sample, float], name: str) -> dict[tuple[str, ...], float]:
    """`name`'s samples by their label values (in label-name order), zeros left out."""
    return {tuple(value for _, value in labels): value
            for (sample, labels), value in samples.items() if sample == name and value}


def stream_ttft(client: httpx.Client, url: str, body: Mapping[str, object],
                headers: dict[str, str], leave_after_first: bool = False) -> float | None:
    """Seconds from sending the request to the first token event, as the client sees it."""
    sent = time.monotonic()
    first = None
    with client.stream("POST", url + "/chat/stream", json=body, headers=headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "event: token" and first is None:
                first = time.monotonic() - sent
                if leave_after_first:
                    break
    return first


@pytest.fixture
def mix_env(tmp_path: Path, upstream_pool: UpstreamPool) -> tuple[dict[str, str], Upstream]:
    primary, fallback = upstream_pool.get(OPENAI), upstream_pool.get(ANTHROPIC)
    prices = (f'[prices."{PRIMARY}"]\ninput = 0.15\noutput = 0.6\n\n'
              f'[prices."{FALLBACK}"]\ninput = 1.0\noutput = 5.0\n')
    toml = tenants_toml(globex={"daily_budget_tokens": 10}, extra=prices)
    env = {**OPENAI.env(primary), **{k: v for k, v in ANTHROPIC.env(fallback).items()
                                     if k not in ("LLM_PROVIDER", "PRIMARY_MODEL")},
           "FALLBACK_MODEL": FALLBACK, "MAX_ATTEMPTS": "2", "RETRY_BASE_S": "0.01",
           "RETRY_MAX_S": "0.02", "BREAKER_FAILURES": "100", "READY_CHECK_S": "3600",
           **config_env(tmp_path, toml)}
    return env, primary


def test_a_scripted_mix_is_counted_exactly_across_two_workers(
        mix_env: tuple[dict[str, str], Upstream]) -> None:
    env, primary = mix_env
    acme = bearer(ACME_KEY)
    body = {"message": f"Tell me about {MARKER}."}
    client_ttft: list[float] = []
    with service_process(env, args=("--workers", "2")) as running, \
            httpx.Client(timeout=15) as client:
        url = running.url
        # success, streamed, with a first token late enough to measure
        primary.queue = [Script(hang_s=0.3)]
        client_ttft.append(stream_ttft(client, url, body, acme) or 0.0)
        # a retry on the same route, then success
        primary.queue = [Script(status=503)]
        assert client.post(url + "/chat", json=body, headers=acme).status_code == 200
        # a guardrail hit: the answer holds an email, redacted
        primary.queue = [Script(tokens=("Mail jane.doe@example.com", " please."))]
        answer = client.post(url + "/chat", json=body, headers=acme).json()["answer"]
        assert "[redacted:email]" in answer
        # a budget rejection: globex's budget cannot hold one request
        refused = client.post(url + "/chat", json=body, headers=bearer(GLOBEX_KEY))
        assert refused.json()["error"]["code"] == "budget_exceeded"
        # an unknown key
        assert client.post(url + "/chat/stream", json=body,
                           headers=bearer("hs_nobody_000000000000")).status_code == 401
        # a client that leaves after its first token
        primary.queue = [Script(tokens=("word ",) * 60, token_delay_s=0.05)]
        client_ttft.append(stream_ttft(client, url, body, acme, leave_after_first=True) or 0.0)
        # a stream that breaks after its first tokens reached the client
        primary.queue = [Script(tokens=("Hello", " there", " friend"), drop_after=2)]
        client_ttft.append(stream_ttft(client, url, body, acme) or 0.0)
        # the primary fails twice: the fallback answers
        primary.queue = [Script(status=503), Script(status=503)]
        assert stream_ttft(client, url, body, acme) is not None
        deadline = time.monotonic() + 10
        while len([r for r in running.log_records() if r.get("event") == "request_end"]) < 6:
            assert time.monotonic() < deadline, "not every request ended"
            time.sleep(0.05)
        samples = scrape(url)
        assert httpx.get(url + "/metrics", timeout=5).status_code == 401

    assert series(samples, "hello_ship_requests_total") == {
        # code, endpoint, outcome, route, status_class
        ("none", "stream", "ok", PRIMARY, "2xx"): 1,
        ("none", "chat", "ok", PRIMARY, "2xx"): 2,
        ("none", "stream", "ok", FALLBACK, "2xx"): 1,
        ("budget_exceeded", "chat", "rejected", "none", "4xx"): 1,
        ("unauthorized", "stream", "rejected", "none", "4xx"): 1,
        ("none", "stream", "client_disconnected", PRIMARY, "4xx"): 1,
        ("stream_interrupted", "stream", "error", PRIMARY, "5xx"): 1,
    }
    ttft_counts = series(samples, "hello_ship_ttft_seconds_count")
    assert ttft_counts == {("stream", PRIMARY): 3, ("chat", PRIMARY): 2, ("stream", FALLBACK): 1}
    assert series(samples, "hello_ship_request_duration_seconds_count") == {
        ("stream", PRIMARY): 3, ("chat", PRIMARY): 2, ("stream", FALLBACK): 1}
    # The three primary streams' time to first token, as observed, is what their clients saw
    # (the client's figure adds the loopback round trip and the request's parsing).
    observed = samples[("hello_ship_ttft_seconds_sum",
                        (("endpoint", "stream"), ("route", PRIMARY)))]
    assert sum(client_ttft) - 0.15 < observed <= sum(client_ttft)
    buckets = {dict(labels)["le"]: value for (name, labels), value in samples.items()
               if name == "hello_ship_ttft_seconds_bucket"
               and dict(labels) | {"le": ""} == {"endpoint": "stream", "route": PRIMARY, "le": ""}}
    assert buckets["+Inf"] == 3
    assert buckets["0.25"] <= 2  # the answer held back 300 ms by the vendor is above it
    assert series(samples, "hello_ship_retries_total") == {("ProviderUnavailable", PRIMARY): 2}
    assert series(samples, "hello_ship_fallbacks_total") == {(FALLBACK, "fallback"): 1}
    assert series(samples, "hello_ship_guardrail_hits_total") == {
        ("redact", "email", "output"): 1}
    assert series(samples, "hello_ship_quota_refusals_total") == {("token_budget",): 1}
    assert series(samples, "hello_ship_client_disconnects_total") == {
        ("stream", "after_first_token"): 1}
    assert series(samples, "hello_ship_stream_errors_total") == {
        ("stream_interrupted", "stream", PRIMARY): 1}
    tokens = series(samples, "hello_ship_tokens_total")
    assert tokens[("input", FALLBACK)] == 17 and tokens[("output", FALLBACK)] == 9
    assert tokens[("input", PRIMARY)] >= 3 * 17 and tokens[("output", PRIMARY)] >= 3 * 9
    cost = series(samples, "hello_ship_cost_usd_total")
    assert cost[(FALLBACK,)] == pytest.approx((17 * 1.0 + 9 * 5.0) / 1e6)
    assert cost[(PRIMARY,)] >= (3 * 17 * 0.15 + 3 * 9 * 0.6) / 1e6
    assert series(samples, "hello_ship_active_streams") == {}  # all ended
    assert series(samples, "hello_ship_breaker_state") == {}  # every route closed (0)
    assert {labels for (name, labels) in samples if name == "hello_ship_breaker_state"} == {
        (("route", PRIMARY),), (("route", FALLBACK),)}

    label_values = {value for _, labels in samples for _, value in labels}
    forbidden = [ACME_KEY, GLOBEX_KEY, ADMIN_KEY, primary.api_key, MARKER, "jane.doe",
                 "acme", "globex", "alice"]
    assert not [value for value in label_values for bad in forbidden if bad in value]


def test_inter_token_gaps_are_observed_per_answer() -> None:
    steps = ["one ", Sleep(0.03), "two ", Sleep(0.03), "three ", Sleep(0.15), "four"]
    provider = ScriptedProvider(steps, name="fake/gaps")  # type: ignore[arg-type]
    settings = Settings.from_env({**FAST_DEMO, "GUARD_OUTPUT_PII": "allow",
                                  "GUARD_OUTPUT_SECRETS": "allow"})
    with thread_server(create_app(settings, provider)) as live, \
            httpx.Client(timeout=10) as client:
        events = parse_sse(client.post(live.url + "/chat/stream",
                                       json={"message": "count"}).text)
        assert [item.data["token"] for item in events
                if item.is_event and item.data["type"] == "token"] == [
            "one ", "two ", "three ", "four"]
        samples = scrape(live.url, key=None)
    buckets = {dict(labels)["le"]: value for (name, labels), value in samples.items()
               if name == "hello_ship_inter_token_seconds_bucket"
               and ("route", "fake/gaps") in labels}
    gap_sum = next(value for (name, labels), value in samples.items()
                   if name == "hello_ship_inter_token_seconds_sum"
                   and ("route", "fake/gaps") in labels)
    # Three gaps between four frames: two of at least 30 ms, one of at least 150 ms. A sleep
    # may overrun on a loaded machine, never undershoot, so only the lower bounds are sure
    # (test_gap_tally.py holds the bucket arithmetic itself to exact counts).
    assert buckets["+Inf"] == 3
    assert buckets["0.025"] == 0
    assert buckets["0.1"] <= 2
    assert gap_sum >= 0.21


def test_breaker_moves_are_counted_and_its_state_shown() -> None:
    provider = ScriptedProvider(["fine"], name="fake/breaker")
    provider.queue = [[Fail(ProviderUnavailable("down"))]]
    settings = Settings.from_env({**FAST_DEMO, "BREAKER_FAILURES": "1", "MAX_ATTEMPTS": "1",
                                  "BREAKER_COOLDOWN_S": "0.2"})
    with thread_server(create_app(settings, provider)) as live, \
            httpx.Client(timeout=10) as client:
        failed = client.post(live.url + "/chat", json={"message": "hi"})
        opened = scrape(live.url, key=None)
        time.sleep(0.25)
        assert client.post(live.url + "/chat", json={"message": "hi"}).status_code == 200
        closed = scrape(live.url, key=None)
    assert failed.status_code == 503
    route = (("route", "fake/breaker"),)
    assert opened[("hello_ship_breaker_state", route)] == 2
    assert series(opened, "hello_ship_fallbacks_total")[("fake/breaker", "static")] >= 1
    assert closed[("hello_ship_breaker_state", route)] == 0
    moves = {state: value for (name, labels), value in closed.items()
             if name == "hello_ship_breaker_transitions_total"
             and ("route", "fake/breaker") in labels for key, state in labels if key == "state"}
    assert moves == {"open": 1, "half_open": 1, "closed": 1}


def test_metrics_take_an_admin_or_scrape_key_when_keys_are_configured(tmp_path: Path) -> None:
    toml = tenants_toml(extra=f'[metrics]\nkeys = ["{hashed_form(SCRAPE_KEY)}"]\n')
    settings = Settings.from_env({**FAST_DEMO, **config_env(tmp_path, toml)})
    with thread_server(create_app(settings)) as live, httpx.Client(timeout=10) as client:
        anonymous = client.get(live.url + "/metrics")
        tenant = client.get(live.url + "/metrics", headers=bearer(ACME_KEY))
        admin = client.get(live.url + "/metrics", headers=bearer(ADMIN_KEY))
        scraper = client.get(live.url + "/metrics", headers=bearer(SCRAPE_KEY))
        scraper_chat = client.post(live.url + "/chat", json={"message": "hi"},
                                   headers=bearer(SCRAPE_KEY))
    for refused in (anonymous, tenant):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        error = refused.json()["error"]
        assert error["code"] == "unauthorized" and error["request_id"].startswith("req_")
    assert admin.status_code == scraper.status_code == 200
    assert "hello_ship_requests_total" in scraper.text
    assert scraper_chat.status_code == 401  # a scrape key is no tenant's


def test_metrics_port_serves_them_apart_from_the_service_port(tmp_path: Path) -> None:
    with service_process({"METRICS_PORT": "0"}) as running, \
            httpx.Client(timeout=10) as client:
        listening = running.wait_for_log("metrics_listening")
        assert listening["host"] == "127.0.0.1"
        metrics_url = f"http://127.0.0.1:{listening['port']}"
        assert client.post(running.url + "/chat", json={"message": "hi"}).status_code == 200
        on_service_port = client.get(running.url + "/metrics")
        scraped = scrape(metrics_url, key=None)
    assert on_service_port.status_code == 404
    assert on_service_port.json()["error"]["code"] == "not_found"
    assert series(scraped, "hello_ship_requests_total") == {
        ("none", "chat", "ok", "demo/hello-1", "2xx"): 1}
    with pytest.raises(httpx.ConnectError):  # the listener stopped with the service
        httpx.get(metrics_url + "/metrics", timeout=2)


@pytest.mark.parametrize(("env", "variable"), [
    ({"METRICS_PORT": "8080", "PORT": "8080"}, "METRICS_PORT"),
    ({"METRICS_PORT": "http"}, "METRICS_PORT"),
])
def test_a_bad_metrics_setting_stops_start_up(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_a_scrape_key_cannot_also_be_an_admin_key(tmp_path: Path) -> None:
    toml = tenants_toml(extra=f'[metrics]\nkeys = ["{hashed_form(ADMIN_KEY)}"]\n')
    with pytest.raises(SettingsError, match=r"metrics\.keys"):
        Settings.from_env(config_env(tmp_path, toml))


def test_label_sets_stay_small() -> None:
    """Every label of every metric is one of a closed set of names: none can carry a tenant,
    a user or a request."""
    samples = scrape_registry_now()
    allowed = {"route", "endpoint", "outcome", "status_class", "code", "direction", "tier",
               "error_class", "state", "detector", "action", "limit", "operation", "policy",
               "phase", "reason", "le",
               # of a vendor's rate limit (requests, tokens, ...), or of a cache match
               "kind",
               "mode"}  # the answer cache's: fallback, first
    used: defaultdict[str, set[str]] = defaultdict(set)
    for name, labels in samples:
        if name.startswith("hello_ship_"):
            for key, _ in labels:
                used[key].add(name)
    assert set(used) <= allowed


def scrape_registry_now() -> dict[Sample, float]:
    from telemetry.exposition import render

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(render().decode())
            for sample in family.samples}


def test_the_documented_table_lists_every_metric() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    section = page.split("## Metrics and alerts", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("`") for line in section.splitlines()
            if line.startswith("| `hello_ship_")}
    assert rows == exposed_names()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_killed_workers_leave_no_gauges_and_the_metrics_port_moves_on(
        upstream_pool: UpstreamPool) -> None:
    upstream = upstream_pool.get(OPENAI)
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}"
    env = {**OPENAI.env(upstream), "METRICS_PORT": str(port), "READY_CHECK_S": "3600"}
    with service_process(env, args=("--workers", "2")) as running, \
            httpx.Client(timeout=10) as client:
        holder = running.wait_for_log("metrics_listening", timeout=10)["pid"]
        running.wait_for_log("metrics_listener_elsewhere", timeout=10)
        for _ in range(2):
            assert client.post(running.url + "/chat", json={"message": "hi"}).status_code == 200
        # A stream in flight on a worker that is then killed: its gauge must not stay.
        upstream.queue = [Script(tokens=("word ",) * 400, token_delay_s=0.05)]
        reading = threading.Thread(target=read_until_cut, args=(running.url,))
        reading.start()
        doomed = running.wait_for_log("request_start", request_id="doomed")["pid"]
        before = scrape(metrics_url, key=None)
        assert series(before, "hello_ship_active_streams") == {("stream",): 1}
        os.kill(doomed, signal.SIGKILL)
        reading.join(timeout=10)
        replaced = wait_for_workers(running, starts=3)
        for killed in ([] if doomed == holder else [holder]):  # the port's worker too
            os.kill(killed, signal.SIGKILL)
            replaced = wait_for_workers(running, starts=4)
        listening = [r["pid"] for r in running.log_records()
                     if r.get("event") == "metrics_listening"]
        after = scrape_when_up(metrics_url)
    assert holder not in replaced and listening[-1] in replaced  # a new worker took the port
    assert series(after, "hello_ship_active_streams") == {}
    assert series(after, "hello_ship_requests_total") == {  # counters of the dead stay
        ("none", "chat", "ok", OPENAI_ROUTE, "2xx"): 2}


OPENAI_ROUTE = PRIMARY


def read_until_cut(url: str) -> None:
    try:
        with httpx.stream("POST", url + "/chat/stream", json={"message": "long"},
                          headers={"X-Request-ID": "doomed"}, timeout=20) as response:
            for _ in response.iter_lines():
                pass
    except httpx.HTTPError:
        pass  # the worker serving it was killed


def wait_for_workers(running: ServiceProcess, starts: int) -> set[int]:
    """The pids of workers that finished starting, once `starts` of them have."""
    deadline = time.monotonic() + 20
    while True:
        started = [r["pid"] for r in running.log_records()
                   if r.get("event") == "Application startup complete."]
        if len(started) >= starts:
            return set(started[-2:])
        assert time.monotonic() < deadline, "no replacement worker started"
        time.sleep(0.05)


def scrape_when_up(url: str) -> dict[Sample, float]:
    deadline = time.monotonic() + 10
    while True:
        try:
            return scrape(url, key=None)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the metrics port stayed closed"
            time.sleep(0.1)


@pytest.mark.parametrize(("env", "message"), [
    ({"METRICS_PORT": "0"}, "METRICS_PORT: 0"),
    ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/hello-ship-metrics"},
     "PROMETHEUS_MULTIPROC_DIR"),
])
def test_serve_refuses_metrics_settings_that_cannot_work(env: dict[str, str],
                                                         message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--workers", "2", "--port", "0"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_answer_that_breaks_after_the_pipeline_is_counted_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug while rendering the answer")

    monkeypatch.setattr("app.responses.render_answer", broken)
    provider = ScriptedProvider(["fine"], name="fake/broken-render")
    with thread_server(create_app(Settings.from_env(FAST_DEMO), provider)) as live, \
            httpx.Client(timeout=10) as client:
        before = series(scrape(live.url, key=None), "hello_ship_requests_total")
        assert client.post(live.url + "/chat", json={"message": "hi"}).status_code == 500
        after = series(scrape(live.url, key=None), "hello_ship_requests_total")
    added = {labels: value - before.get(labels, 0) for labels, value in after.items()
             if value != before.get(labels, 0)}
    assert added == {("internal_error", "chat", "error", "fake/broken-render", "5xx"): 1}


def test_a_pinned_route_is_no_fallback() -> None:
    primary = ScriptedProvider(["primary answer"], name="fake/pin-primary")
    fallback = ScriptedProvider(["fallback answer"], name="fake/pin-fallback")
    settings = Settings.from_env(FAST_DEMO)
    with captured_logs() as logs, \
            thread_server(create_app(settings, [primary, fallback])) as live, \
            httpx.Client(timeout=10) as client:
        answer = client.post(live.url + "/chat", json={"message": "hi"},
                             headers={"X-Route": "fake/pin-fallback"}).json()
        samples = scrape(live.url, key=None)
    assert answer["model_route"] == "fake/pin-fallback"
    assert not [k for k in series(samples, "hello_ship_fallbacks_total")
                if "fake/pin-fallback" in k]
    assert not logs.records("fallback_used")
