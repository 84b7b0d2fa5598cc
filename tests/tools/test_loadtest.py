"""`hello-ship loadtest` against real servers: the service on its paced demo, a fake OpenAI
vendor straight and through the service, and the command as a user runs it."""

from __future__ import annotations

import datetime
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from PIL import Image

from cli.main import main
from tests.servers import app_server, service_process, settings_from
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import OPENAI
from tools.loadtest_report import SCHEMA_FILE

# The output guard holds text for up to GUARD_HOLD_MS; these tests measure the pacing alone.
GUARD_OFF = {"GUARD_OUTPUT_PII": "allow", "GUARD_OUTPUT_SECRETS": "allow"}
WORDS = tuple(f" word{i}" for i in range(20))


def loadtest(capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str,
             *args: str) -> tuple[int, str, dict[str, Any]]:
    """Runs the command in this process; its exit status, its table and its report."""
    report = tmp_path / "report.json"
    code = main(["loadtest", url, "--report", str(report), *args])
    return code, capsys.readouterr().out, orjson.loads(report.read_bytes())


def summary(report: dict[str, Any], level: int = 0) -> dict[str, Any]:
    return report["levels"][level]["summary"]  # type: ignore[no-any-return]


@pytest.fixture
def openai_upstream(upstream_pool: UpstreamPool) -> Upstream:
    return upstream_pool.get(OPENAI)


def test_ttft_on_the_paced_demo_is_the_pacing_it_was_given(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    settings = settings_from(DEMO_TTFT_MS="150", DEMO_TOKEN_DELAY_MS="10",
                             DEMO_ANSWER_TOKENS="20", **GUARD_OFF)
    with app_server(settings) as live:
        code, table, report = loadtest(capsys, tmp_path, live.url, "--concurrency", "4",
                                       "--requests", "12")
    assert code == 0
    s = summary(report)
    assert (s["requests"], s["ok"], s["failed"]) == (12, 12, 0)
    assert 150 <= s["ttft_ms"]["p50"] <= 165, s["ttft_ms"]
    assert 10 <= s["itl_ms"]["p50"] <= 14, s["itl_ms"]
    assert 10 <= s["tpot_ms"]["p50"] <= 14, s["tpot_ms"]
    # The guard off, each of the demo's tokens is a frame (its 20 words and their punctuation).
    assert all(r["text_frames"] == r["output_tokens"] >= 20 for r in report["requests"])
    assert s["token_source"] == "usage" and s["tokens_per_frame"] == 1.0
    assert all(r["request_id"].startswith("req_") for r in report["requests"])
    assert f"{live.url}/chat/stream (hello-ship), concurrency 4" in table
    assert "TTFT ms" in table and "12 requests: 12 ok, 0 failed" in table


def test_a_vendor_measured_straight_and_through_the_service_side_by_side(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, openai_upstream: Upstream) -> None:
    openai_upstream.script = Script(tokens=WORDS, output_tokens=len(WORDS), first_token_s=0.12,
                                    token_delay_s=0.01)
    code, _, direct = loadtest(capsys, tmp_path, openai_upstream.url + "/v1/chat/completions",
                               "--key", openai_upstream.api_key, "--model", "gpt-4o-mini",
                               "--requests", "6")
    assert code == 0 and direct["target"]["api"] == "openai"
    assert openai_upstream.last.json["stream_options"] == {"include_usage": True}
    with app_server(settings_from(**OPENAI.env(openai_upstream), **GUARD_OFF)) as live:
        code, _, through = loadtest(capsys, tmp_path, live.url, "--requests", "6")
    assert code == 0
    straight, served = summary(direct)["ttft_ms"]["p50"], summary(through)["ttft_ms"]["p50"]
    assert 120 <= straight <= 135 and 120 <= served <= 140, (straight, served)
    assert served >= straight - 2  # the service cannot make the vendor's first token come sooner
    for report in (direct, through):
        assert summary(report)["output_tokens"] == 6 * len(WORDS)
        assert 10 <= summary(report)["itl_ms"]["p50"] <= 14


def test_refusals_and_broken_streams_are_counted_by_code(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, openai_upstream: Upstream) -> None:
    openai_upstream.queue = [Script(status=429), Script(status=503), Script(status=503),
                             Script(stream_error_after=2)]
    code, table, report = loadtest(
        capsys, tmp_path, openai_upstream.url + "/v1/chat/completions",
        "--key", openai_upstream.api_key, "--model", "gpt-4o-mini", "--requests", "6")
    s = summary(report)
    assert code == 0 and (s["ok"], s["failed"]) == (2, 4)
    assert s["errors"] == {"http 503 server_error": 2, "http 429 rate_limit_exceeded": 1,
                           "stream server_error": 1}
    assert "       2 http 503 server_error" in table
    statuses = [r["status"] for r in report["requests"]]
    assert statuses == [429, 503, 503, 200, 200, 200]


def test_the_services_own_error_codes_are_counted_through_it(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, openai_upstream: Upstream) -> None:
    env = {**OPENAI.env(openai_upstream), **GUARD_OFF, "MAX_ATTEMPTS": "1",
           "RPM_PER_TENANT": "3"}
    openai_upstream.queue = [Script(status=503), Script(stream_error_after=2)]
    with app_server(settings_from(**env)) as live:
        code, _, report = loadtest(capsys, tmp_path, live.url, "--requests", "5")
    assert code == 0 and summary(report)["ok"] == 1
    assert summary(report)["errors"] == {"http 429 rate_limited": 2,
                                         "stream provider_unavailable": 1,
                                         "stream stream_interrupted": 1}


def test_an_open_loop_sends_at_the_rate_asked(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    # The service in a process of its own: in a thread of this one it would take turns with
    # the load tester for the interpreter, and hold up its sending.
    with service_process() as service:
        code, table, report = loadtest(capsys, tmp_path, service.url, "--rate", "40",
                                       "--requests", "120")
    level = report["levels"][0]
    assert code == 0 and level["summary"]["ok"] == 120
    # The client keeps to the arrivals it drew, and those are a Poisson process at the rate
    # asked (a fixed seed: the same 120 arrivals every run).
    assert abs(level["achieved_rate"] / level["scheduled_rate"] - 1) < 0.05, level
    assert abs(level["achieved_rate"] / 40 - 1) < 0.2, level
    assert level["late_ms"]["p99"] < 100
    gaps = [b["sent_ms"] - a["sent_ms"] for a, b in zip(report["requests"],
                                                          report["requests"][1:], strict=False)]
    assert max(gaps) > 3 * min(gaps)  # arrivals are random, not a metronome
    assert "sent 3" in table or "sent 4" in table


def test_a_sweep_writes_a_report_that_matches_its_schema_and_a_png_plot(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plot = tmp_path / "ttft.png"
    before = datetime.datetime.now(datetime.UTC)
    with app_server() as live:
        code, table, report = loadtest(capsys, tmp_path, live.url, "--concurrency", "1,3",
                                       "--requests", "6", "--warmup", "2", "--plot", str(plot),
                                       "--slo-ttft-ms", "10000")
    assert code == 0
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    started = datetime.datetime.fromisoformat(report["started_at"])
    assert abs(started - before) < datetime.timedelta(seconds=5)  # the start, not the end
    assert [level["load"] for level in report["levels"]] == [
        {"kind": "concurrency", "value": 1}, {"kind": "concurrency", "value": 3}]
    assert len(report["requests"]) == 16
    assert sum(r["warmup"] for r in report["requests"]) == 4
    for level in (0, 1):
        s = summary(report, level)
        assert s["requests"] == 6 and s["ttft_ms"]["count"] == 6
        assert s["goodput_per_s"] == pytest.approx(s["requests_per_s"])
    assert "concurrency 1 " in table.splitlines()[-2] and "TTFT p99" in table
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (1200, 800)


def test_the_key_and_headers_are_sent_and_the_key_is_never_shown(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, openai_upstream: Upstream) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "first prompt"}\n\n'
                       '{"messages": [{"role": "system", "content": "be brief"}, '
                       '{"role": "user", "content": "second prompt"}]}\n')
    code, table, report = loadtest(
        capsys, tmp_path, openai_upstream.url + "/v1/chat/completions", "--requests", "3",
        "--key", openai_upstream.api_key, "--header", "X-Load-Test: nightly",
        "--prompts", str(prompts), "--max-tokens", "50")
    assert code == 0 and summary(report)["ok"] == 3
    sent = [r for r in openai_upstream.requests if r.path == "/v1/chat/completions"]
    assert all(r.headers["authorization"] == f"Bearer {openai_upstream.api_key}" for r in sent)
    assert all(r.headers["x-load-test"] == "nightly" for r in sent)
    assert [r.json["messages"][-1]["content"] for r in sent] == [
        "first prompt", "second prompt", "first prompt"]
    assert sent[1].json["messages"][0] == {"role": "system", "content": "be brief"}
    assert all(r.json["max_tokens"] == 50 for r in sent)
    listed = httpx.get(openai_upstream.url + "/v1/models",
                       headers={"Authorization": f"Bearer {openai_upstream.api_key}"})
    assert sent[0].json["model"] == listed.json()["data"][0]["id"]  # no --model: the first
    assert report["target"]["model"] == sent[0].json["model"]
    assert report["options"]["key"] is True
    assert report["options"]["header_names"] == ["X-Load-Test"]
    assert openai_upstream.api_key not in table + json.dumps(report)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "loadtest", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_the_key_goes_where_it_was_meant_to(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           openai_upstream: Upstream,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    url = openai_upstream.url + "/v1/chat/completions"
    key = openai_upstream.api_key

    def authorization() -> list[str]:
        return [r.headers.get("authorization", "") for r in openai_upstream.requests
                if r.path == "/v1/chat/completions"]

    monkeypatch.setenv("LOADTEST_KEY", key)
    assert loadtest(capsys, tmp_path, url, "--requests", "1")[0] == 0
    assert authorization() == [f"Bearer {key}"]
    # A header of the user's own wins over the environment's key, which is then not sent.
    openai_upstream.requests.clear()
    monkeypatch.setenv("LOADTEST_KEY", "some-other-services-key")
    code, _, _ = loadtest(capsys, tmp_path, url, "--requests", "1",
                          "--header", f"Authorization: Bearer {key}")
    assert code == 0 and authorization() == [f"Bearer {key}"]
    assert main(["loadtest", url, "--key", key, "--header", f"authorization: Bearer {key}"]) == 2
    assert "give the key once" in capsys.readouterr().err
    monkeypatch.setenv("LOADTEST_KEY", "line\nbreak")
    assert main(["loadtest", url]) == 2
    assert "$LOADTEST_KEY must be printable ASCII" in capsys.readouterr().err


def test_files_that_could_not_be_written_are_refused_before_the_run(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["loadtest", "http://127.0.0.1:9", "--plot", "ttft.pdf"]) == 2
    assert capsys.readouterr().err == ("hello-ship: loadtest: --plot writes a PNG file: give a "
                                       "name ending in .png\n")
    missing = tmp_path / "no-such-dir" / "report.json"
    assert main(["loadtest", "http://127.0.0.1:9", "--report", str(missing)]) == 2
    assert capsys.readouterr().err == (f"hello-ship: loadtest: cannot write {missing}: its "
                                       "directory does not exist or is not writable\n")


def test_a_plot_without_matplotlib_names_the_extra_to_install(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.loadtest

    monkeypatch.setattr(tools.loadtest, "available", lambda: False)  # as without the extra
    assert main(["loadtest", "http://127.0.0.1:9", "--plot", "ttft.png"]) == 2
    assert capsys.readouterr().err == ("hello-ship: loadtest: --plot needs matplotlib: pip "
                                       "install 'hello-ship[loadtest]'\n")


def test_a_target_that_refuses_connections_ends_with_a_clear_message() -> None:
    port = free_port()
    proc = command(f"http://127.0.0.1:{port}", "--requests", "5")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err == (f"hello-ship: loadtest: cannot connect to http://127.0.0.1:{port}/chat/stream:"
                   " refused\n")
    assert out == ""


def test_bad_prompts_file_is_named_by_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"messages": [{"role": "robot"}]}\n')
    assert main(["loadtest", "http://127.0.0.1:9", "--prompts", str(prompts)]) == 2
    assert f"{prompts}:2: each message needs a role" in capsys.readouterr().err


@pytest.mark.parametrize("args", [
    ["--concurrency", "0"], ["--concurrency", "4", "--rate", "2"], ["--rate", "nan"],
    ["--header", "no colon"], ["--duration", "0"], ["--requests", "-1"],
    ["--key", "sk-1\r\nX-Injected: yes"], ["--key", "sk-ключ"],
    ["--header", "X-Note: ключ"], ["--header", "X-Note: a\r\nX-Injected: yes"],
    ["--header", "X-Note: a\x01b"], ["--header", "Host: elsewhere"],
    ["--header", "content-length: 0"],
])
def test_bad_flags_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["loadtest", "http://127.0.0.1:9", *args])
    assert exit_.value.code == 2
    assert "usage: hello-ship loadtest" in capsys.readouterr().err


def test_ctrl_c_prints_and_writes_the_partial_summary(tmp_path: Path) -> None:
    settings = settings_from(DEMO_TTFT_MS="20", DEMO_TOKEN_DELAY_MS="10",
                             DEMO_ANSWER_TOKENS="30")
    report = tmp_path / "report.json"
    with app_server(settings) as live:
        proc = command(live.url, "--concurrency", "4", "--requests", "10000",
                       "--report", str(report))
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("loadtest: concurrency 4, up to 10000")
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert "concurrency 4 (interrupted: partial results)" in out
    written = orjson.loads(report.read_bytes())
    s = summary(written)
    assert written["interrupted"] is True and s["ok"] >= 4
    assert s["unfinished"] == 4  # the four in flight, left out of every figure
    assert f"{s['requests']} requests: {s['ok']} ok, 0 failed, 4 unfinished" in out
    cut = [r for r in written["requests"] if not r["finished"]]
    assert len(cut) == 4 and all(r["error"] is None for r in cut)


def test_ctrl_c_while_the_target_is_checked_ends_cleanly(openai_upstream: Upstream) -> None:
    openai_upstream.script = Script(hang_s=30)  # GET /v1/models does not answer
    proc = command(openai_upstream.url + "/v1/chat/completions", "--key",
                   openai_upstream.api_key)
    deadline = time.monotonic() + 20
    while not any(r.path == "/v1/models" for r in openai_upstream.requests):
        assert time.monotonic() < deadline, "the model list was never asked for"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (130, "")
    assert err == "\nloadtest: interrupted before the run started\n"


def test_an_open_loop_stops_sending_when_its_time_is_up(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    settings = settings_from(DEMO_TTFT_MS="1500", DEMO_ANSWER_TOKENS="2")
    with app_server(settings) as live:
        started = time.monotonic()
        code, table, report = loadtest(capsys, tmp_path, live.url, "--rate", "20",
                                       "--duration", "1", "--max-inflight", "2")
        took = time.monotonic() - started
    level = report["levels"][0]
    assert code == 0 and level["summary"]["ok"] == 2
    assert level["unsent"] >= 10  # about 20 arrivals in the second; 2 could be sent
    assert level["achieved_rate"] == pytest.approx(2.0)  # 2 sent in the second of sending
    assert f"{level['unsent']} arrivals not sent: --max-inflight" in table
    assert took < 4  # one second of sending, then the two in flight finish


def test_a_run_that_measured_nothing_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with app_server() as live:
        code = main(["loadtest", live.url, "--warmup", "1000", "--duration", "0.3"])
    assert code == 1
    assert "no request was measured" in capsys.readouterr().err
