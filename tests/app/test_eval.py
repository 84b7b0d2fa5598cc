"""`hello-ship eval`: the smoke set on every route of a chain of real (fake) vendors, a
regression failing with its case and check named, a wrong fallback failing its own row, and
a malformed case file reported by line."""

from __future__ import annotations

import os
import subprocess
import sys
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
from app.settings import Settings
from providers.demo import DemoProvider
from providers.routes import ProviderOptions, build_provider
from tests.servers import FAST_DEMO, ThreadServer, thread_server
from tests.tenancy import ADMIN_KEY, config_env, tenants_toml
from tests.upstreams.common import Script
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import ANTHROPIC, AWS_TEST_ENV, BEDROCK, OPENAI

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "eval" / "smoke.jsonl"
# CI keeps this file as the smoke eval's artifact.
REPORT = Path(os.environ.get("EVAL_REPORT", ROOT / "reports" / "eval-smoke.json"))
ROUTES = ["demo/hello-1", "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022",
          "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0"]


def hello_ship(*args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def chain_of_four(upstream_pool: UpstreamPool, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadServer]:
    """demo, then OpenAI, Anthropic and Bedrock fakes as fallbacks; admin key configured."""
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env({**FAST_DEMO, **config_env(tmp_path, tenants_toml())})
    providers = [DemoProvider("hello-1", settings.demo)] + [
        build_provider(vendor.spec(upstream_pool.get(vendor)), ProviderOptions())
        for vendor in (OPENAI, ANTHROPIC, BEDROCK)]
    with thread_server(create_app(settings, providers)) as live:
        yield live


def report_of(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    return report


def test_the_smoke_set_passes_on_every_route_and_its_report_is_kept(
        chain_of_four: ThreadServer) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    run = hello_ship("eval", str(SMOKE), "--url", chain_of_four.url, "--key", ADMIN_KEY,
                     "--route", "all", "--report", str(REPORT))
    assert run.returncode == 0, run.stdout + run.stderr
    report = report_of(REPORT)
    assert report["passed"] is True
    assert list(report["routes"]) == ROUTES
    cases = sum(1 for line in SMOKE.read_text().splitlines() if line.startswith("{"))
    assert all(route["pass_rate"] == 1.0 and route["cases"] == cases
               for route in report["routes"].values())
    # each row ran on the route it names: pinned, no fallback
    assert {(row["route"], row["model_route"]) for row in report["results"]} == {
        (route, route) for route in ROUTES}
    assert all(row["output_tokens"] and row["latency_ms"] > 0 for row in report["results"])
    for route in ROUTES:
        assert f"ok    {route}: {cases}/{cases} passed" in run.stdout


def test_a_fallback_answering_wrongly_fails_its_own_row(chain_of_four: ThreadServer,
                                                        upstream_pool: UpstreamPool,
                                                        tmp_path: Path) -> None:
    upstream_pool.get(ANTHROPIC).script = Script(tokens=("Goodbye", " for", " now."))
    report = tmp_path / "report.json"
    run = hello_ship("eval", str(SMOKE), "--url", chain_of_four.url, "--key", ADMIN_KEY,
                     "--report", str(report))
    assert run.returncode == 1
    rates = {name: route["pass_rate"] for name, route in report_of(report)["routes"].items()}
    assert rates["anthropic/claude-3-5-haiku-20241022"] < 1.0
    assert {rate for name, rate in rates.items() if name.startswith(("demo", "openai",
                                                                     "bedrock"))} == {1.0}
    assert "FAIL  anthropic/claude-3-5-haiku-20241022" in run.stdout
    assert 'fail  greets-a-customer (line 3): contains "hello"' in run.stdout


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
        chain_of_four: ThreadServer) -> None:
    from tests.tenancy import ACME_KEY

    tenant_key = hello_ship("eval", str(SMOKE), "--url", chain_of_four.url, "--key", ACME_KEY)
    assert tenant_key.returncode == 2
    assert "takes an admin key" in tenant_key.stderr
    unknown = hello_ship("eval", str(SMOKE), "--url", chain_of_four.url, "--key", ADMIN_KEY,
                         "--route", "demo/typo")
    assert unknown.returncode == 2 and "no route of that name" in unknown.stderr
