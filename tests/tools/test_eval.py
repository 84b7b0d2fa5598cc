"""`hello-ship eval`: the smoke set on every route of a chain of real (fake) vendors, a
regression failing with its case and check named, a wrong fallback failing its own row, a
malformed case file reported by line, and the run against the real service in-process."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.factory import create_app
from config.settings import Settings
from providers.demo import DemoProvider
from providers.registry import ProviderOptions, build_provider
from quota.prices import Price
from tests.eval_fakes import ROOT, hello_ship
from tests.servers import FAST_DEMO, ThreadServer, thread_server
from tests.tenant_keys import ACME_KEY, ADMIN_KEY, config_env, tenants_toml
from tests.upstreams.common import Script
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, AWS_TEST_ENV, BEDROCK, OPENAI, OPENAI_COMPATIBLE
from tools.eval_cases import load_cases
from tools.eval_checks import ErrorCodeCheck, SearchCheck

SMOKE = ROOT / "eval" / "smoke.jsonl"
# CI keeps this file as the smoke eval's artifact.
REPORT = Path(os.environ.get("EVAL_REPORT", ROOT / "reports" / "eval-smoke.json"))
VENDORS = (OPENAI, OPENAI_COMPATIBLE, ANTHROPIC, BEDROCK)
ROUTES = ["demo/hello-1", *(f"{vendor.provider}/{vendor.model}" for vendor in VENDORS)]
# USD per 1M tokens of each wire-exact route; the demo model is free, as the service bills it.
PRICES = {route: Price(0.1 * (index + 1), 0.4 * (index + 1))
          for index, route in enumerate(ROUTES[1:])}


def prices_toml() -> str:
    return "".join(f'\n[prices."{route}"]\ninput = {price.input_per_m}\n'
                   f"output = {price.output_per_m}\n" for route, price in PRICES.items())


@pytest.fixture
def service_config(tmp_path: Path) -> Path:
    """The service's config file: tenants, an admin key and the routes' prices."""
    return Path(config_env(tmp_path, tenants_toml(extra=prices_toml()))["HELLO_SHIP_CONFIG"])


@pytest.fixture
def test_chain(upstream_pool: UpstreamPool, service_config: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadServer]:
    """demo, then every wire-exact vendor (OpenAI, an OpenAI-compatible server with a
    slash in its model id, Anthropic, Bedrock) as fallbacks; admin key configured."""
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    # The chain named in the settings too, so the config's prices are the service's own.
    settings = Settings.from_env({**FAST_DEMO, **AWS_TEST_ENV,
                                  "HELLO_SHIP_CONFIG": str(service_config),
                                  "FALLBACK_MODEL": ",".join(ROUTES[1:])})
    providers = [DemoProvider("hello-1", settings.demo)] + [
        build_provider(vendor.spec(upstream_pool.get(vendor)), ProviderOptions())
        for vendor in VENDORS]
    with thread_server(create_app(settings, providers)) as live:
        yield live


def report_of(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    return report


def test_the_smoke_set_passes_on_every_route_and_its_report_is_kept(
        test_chain: ThreadServer, service_config: Path) -> None:
    REPORT.unlink(missing_ok=True)  # a report of an earlier run never passes for this one
    run = hello_ship("eval", str(SMOKE), "--url", test_chain.url, "--key", ADMIN_KEY,
                     "--route", "all", "--report", str(REPORT), "--config", str(service_config))
    assert run.returncode == 0, run.stdout + run.stderr
    report = report_of(REPORT)
    assert report["passed"] is True and report["error"] is None
    assert list(report["routes"]) == ROUTES and report["skipped_routes"] == []
    cases = sum(1 for line in SMOKE.read_text().splitlines() if line.startswith("{"))
    assert all(route["pass_rate"] == 1.0 and route["cases"] == cases
               for route in report["routes"].values())
    answered = [row for row in report["results"] if row["error_code"] is None]
    # each row ran on the route it names: pinned, no fallback
    assert {(row["route"], row["model_route"]) for row in answered} == {
        (route, route) for route in ROUTES}
    assert all(row["output_tokens"] and row["latency_ms"] > 0 for row in answered)
    for row in answered:  # every answer priced, from the service's own config
        price = PRICES.get(row["route"], Price(0.0, 0.0))
        assert row["cost_usd"] == price.nano_usd(row["input_tokens"],
                                                 row["output_tokens"]) / 1e9
        assert (row["cost_usd"] > 0) is (row["route"] != "demo/hello-1")
    for route in ROUTES:
        assert f"ok    {route}: {cases}/{cases} passed" in run.stdout


def test_the_smoke_set_makes_every_kind_of_check_that_holds_on_every_route() -> None:
    checks = [check for case in load_cases(SMOKE) for check in case.checks]
    kinds = {type(check).__name__ for check in checks}
    assert {"SearchCheck", "EqualsCheck", "MaxCharsCheck", "ErrorCodeCheck",
            "MaxTtftCheck"} <= kinds
    assert {check.kind for check in checks if isinstance(check, SearchCheck)} == {
        "contains", "not_contains", "regex"}
    assert any(isinstance(check, ErrorCodeCheck) for check in checks)


def test_a_fallback_answering_wrongly_fails_its_own_row(test_chain: ThreadServer,
                                                        upstream_pool: UpstreamPool,
                                                        service_config: Path,
                                                        tmp_path: Path) -> None:
    upstream_pool.get(ANTHROPIC).script = Script(tokens=("Goodbye", " for", " now."))
    report = tmp_path / "report.json"
    # No --config: the prices come from HELLO_SHIP_CONFIG, as the service's own do.
    run = hello_ship("eval", str(SMOKE), "--url", test_chain.url, "--key", ADMIN_KEY,
                     "--report", str(report), env={"HELLO_SHIP_CONFIG": str(service_config)})
    assert run.returncode == 1
    rows = report_of(report)
    rates = {name: route["pass_rate"] for name, route in rows["routes"].items()}
    assert rates["anthropic/claude-3-5-haiku-20241022"] < 1.0
    assert {rate for name, rate in rates.items() if not name.startswith("anthropic")} == {1.0}
    assert "FAIL  anthropic/claude-3-5-haiku-20241022" in run.stdout
    assert 'fail  greets-a-customer (line 3): contains "hello"' in run.stdout
    assert all(row["cost_usd"] for row in rows["results"]
               if row["route"].startswith("openai/") and row["output_tokens"])


def test_a_regression_in_the_answer_fails_naming_the_case_and_check(tmp_path: Path) -> None:
    cases = tmp_path / "demo.jsonl"
    cases.write_text('{"id": "counts-words", "input": "one two three", '
                     '"checks": [{"contains": "you wrote 3 words"}, {"max_chars": 400}]}\n')
    env = {**FAST_DEMO, "HELLO_SHIP_CONFIG": ""}
    assert hello_ship("eval", str(cases), env=env).returncode == 0
    # the model's answer changes: it rambles on past what the case allows
    run = hello_ship("eval", str(cases), env={**env, "DEMO_ANSWER_TOKENS": "200"})
    assert run.returncode == 1
    assert "FAIL  demo/hello-1: 0/1 passed" in run.stdout
    assert "counts-words (line 1): max_chars 400" in run.stdout


def test_a_malformed_case_file_is_reported_by_line_not_a_traceback(tmp_path: Path) -> None:
    cases = tmp_path / "broken.jsonl"
    cases.write_text('{"id": "fine", "input": "hi", "checks": [{"contains": "hello"}]}\n'
                     '{"id": "broken", "input": "hi", "checks": [{"contians": "x"}]}\n')
    run = hello_ship("eval", str(cases))
    assert run.returncode == 2
    assert "broken.jsonl:2" in run.stderr and "contians" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_stale_report_does_not_survive_a_run_that_cannot_write_its_own(
        tmp_path: Path) -> None:
    cases = tmp_path / "broken.jsonl"
    cases.write_text('{"id": "broken", "input": "hi", "checks": []}\n')
    report = tmp_path / "reports" / "eval.json"
    report.parent.mkdir()
    report.write_text('{"passed": true}')
    run = hello_ship("eval", str(cases), "--report", str(report))
    assert run.returncode == 2 and not report.exists()


def broken_service() -> Starlette:
    """A service that answers /ready, then streams badly: one case's stream stops without
    `done`, another's hangs between heartbeats."""
    async def ready(request: Request) -> Response:
        return JSONResponse({"status": "ready", "routes": [{"route": "fake/one"}]})

    async def stream(request: Request) -> Response:
        text = (await request.json())["messages"][-1]["content"]

        async def frames() -> AsyncIterator[bytes]:
            yield b'event: meta\ndata: {"type":"meta","model_route":"fake/one"}\n\n'
            yield b'event: token\ndata: {"type":"token","token":"hello"}\n\n'
            while text == "hang":
                await anyio.sleep(0.2)
                yield b": heartbeat\n\n"
            if text == "fine":
                yield b'event: done\ndata: {"type":"done","usage":{"input_tokens":1,' \
                      b'"output_tokens":1}}\n\n'

        return StreamingResponse(frames(), media_type="text/event-stream")

    return Starlette(routes=[Route("/ready", ready), Route("/chat/stream", stream,
                                                           methods=["POST"])])


def test_a_request_that_fails_fails_its_own_row_and_the_rest_still_run(
        tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(
        f'{{"id": "{text}", "input": "{text}", "checks": [{{"contains": "hello"}}]}}'
        for text in ("fine", "cut", "hang")) + "\n")
    report = tmp_path / "report.json"
    with thread_server(broken_service()) as live:
        run = hello_ship("eval", str(cases), "--url", live.url, "--timeout", "1.5",
                         "--report", str(report))
    assert run.returncode == 1, run.stderr
    rows = {row["case"]: row for row in report_of(report)["results"]}
    assert rows["fine"]["passed"] and rows["fine"]["ttft_ms"] is not None
    assert rows["cut"]["error_code"] == "incomplete_stream" and not rows["cut"]["passed"]
    assert rows["hang"]["error_code"] == "client_timeout" and not rows["hang"]["passed"]
    assert rows["hang"]["latency_ms"] < 3000  # the case's time, though heartbeats kept coming
    assert "Traceback" not in run.stderr


def test_an_operator_mistake_stops_the_eval_instead_of_failing_every_case(
        test_chain: ThreadServer, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    tenant_key = hello_ship("eval", str(SMOKE), "--url", test_chain.url, "--key", ACME_KEY,
                            "--report", str(report))
    assert tenant_key.returncode == 2
    assert "takes an admin key" in tenant_key.stderr
    # the requests were made: the report keeps what they got, and why the run stopped
    stopped = report_of(report)
    assert stopped["passed"] is False and "takes an admin key" in stopped["error"]
    assert {row["error_code"] for row in stopped["results"]} == {"route_pin_forbidden"}
    unknown = hello_ship("eval", str(SMOKE), "--url", test_chain.url, "--key", ADMIN_KEY,
                         "--route", "demo/typo")
    assert unknown.returncode == 2 and "no route of that name" in unknown.stderr
    admin_unpinned = hello_ship("eval", str(SMOKE), "--url", test_chain.url, "--key",
                                ADMIN_KEY, "--route", "chain")
    assert admin_unpinned.returncode == 2
    assert "--route chain, which takes a tenant key" in admin_unpinned.stderr


QUICK = '{"id": "greets", "input": "Say hello.", "checks": [{"contains": "hello"}]}\n'


@pytest.mark.parametrize("listener_setting", [{"HOST": "0.0.0.0"}, {"ALLOW_OPEN_MODE": "true"},
                                              {"METRICS_PORT": "taken"}])
def test_in_process_ignores_what_only_a_real_listener_needs(
        tmp_path: Path, listener_setting: dict[str, str]) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text(QUICK)
    with socket.socket() as taken:  # e.g. the metrics port of a service already running
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        setting = {name: port if value == "taken" else value
                   for name, value in listener_setting.items()}
        run = hello_ship("eval", str(cases),
                         env={**FAST_DEMO, "HELLO_SHIP_CONFIG": "", **setting})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok    demo/hello-1: 1/1 passed" in run.stdout


def test_disabled_routes_are_skipped_out_loud_and_never_pass_a_run(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text(QUICK)
    report = tmp_path / "report.json"
    env = {**FAST_DEMO, "HELLO_SHIP_CONFIG": "", "FALLBACK_MODEL": "demo/hello-2",
           "DISABLED_ROUTES": "demo/hello-2"}
    run = hello_ship("eval", str(cases), "--report", str(report), env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "skip  demo/hello-2: disabled (DISABLED_ROUTES)"
    assert report_of(report)["skipped_routes"] == ["demo/hello-2"]
    assert list(report_of(report)["routes"]) == ["demo/hello-1"]
    every = hello_ship("eval", str(cases), "--report", str(report),
                       env={**env, "DISABLED_ROUTES": "demo/hello-1,demo/hello-2"})
    assert every.returncode == 2
    assert "skip  demo/hello-1: disabled" in every.stdout
    assert "every route of the chain is disabled" in every.stderr
    assert not report.exists()  # no request made: no report, and no stale one


def test_requests_refused_for_a_stream_limit_are_retried_until_answered(
        tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text("".join(QUICK.replace("greets", f"greets-{n}") for n in range(4)))
    report = tmp_path / "report.json"
    run = hello_ship("eval", str(cases), "--concurrency", "4", "--report", str(report),
                     env={**FAST_DEMO, "HELLO_SHIP_CONFIG": "", "STREAMS_PER_TENANT": "1",
                          "DEMO_TTFT_MS": "300"})
    assert '"too_many_streams"' in run.stderr  # the service's log: the limit did refuse some
    assert run.returncode == 0, run.stdout
    assert all(row["passed"] and row["error_code"] is None
               for row in report_of(report)["results"])
