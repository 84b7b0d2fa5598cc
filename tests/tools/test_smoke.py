"""`hello-ship smoke URL` as an operator runs it after a deploy, against real servers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from providers.types import Finish, Usage
from tests.eval_fakes import FakeService, good_stream, hello_ship, sse
from tests.fakes import ScriptedProvider, Sleep, words
from tests.servers import app_server, settings_from, thread_server
from tools.smoke import SMOKE_MESSAGE


def smoke(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "smoke", url, *args],
                          capture_output=True, text=True, timeout=60)


def test_a_healthy_service_passes_every_step() -> None:
    with app_server() as live:
        result = smoke(live.url)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [
        ["ok", "ready"], ["ok", "chat"], ["ok", "stream"]]
    assert "from demo/hello-1" in lines[1] and "first token after" in lines[2]
    assert lines[3].startswith("smoke passed in ")


def test_a_service_that_is_not_ready_fails_with_its_reasons() -> None:
    settings = settings_from(LLM_PROVIDER="openai", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    with app_server(settings) as live:
        result = smoke(live.url)
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith("FAIL  ready")
    assert "/ready is 503: openai/gpt-4o-mini: no API key: set OPENAI_API_KEY" in line


def test_an_empty_answer_fails_the_chat_step() -> None:
    provider = ScriptedProvider([Usage(3, 0), Finish("stop")])
    with app_server(provider=provider) as live:
        result = smoke(live.url)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith("FAIL  chat    /chat gave an empty answer")


def test_a_stream_that_never_sends_done_fails_within_the_timeout() -> None:
    provider = ScriptedProvider(words("hello"), queue=[words("hello there"), ["hi", Sleep(60)]])
    with app_server(provider=provider) as live:
        result = smoke(live.url, "--timeout", "3")
    assert result.returncode == 1
    last = result.stdout.splitlines()[-1]
    assert last.startswith("FAIL  stream") and "no done frame" in last


def test_an_unreachable_service_fails_at_once() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = smoke(f"http://127.0.0.1:{port}", "--timeout", "5")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:" in result.stdout


def fake_smoke(fake: FakeService, *args: str) -> subprocess.CompletedProcess[str]:
    with thread_server(fake.app()) as live:
        return smoke(live.url, *args)


@pytest.mark.parametrize("frame", [b"event: error\ndata: not json\n\n",
                                   b"event: error\ndata: [1]\n\n",
                                   sse({"type": "error", "code": {}})])
def test_a_malformed_error_frame_fails_the_stream_step(frame: bytes) -> None:
    result = fake_smoke(FakeService(streams={SMOKE_MESSAGE: [frame]}))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith("FAIL  stream  malformed answer: ")


def test_sse_without_a_space_after_the_colon_is_read_as_the_spec_says() -> None:
    frames = [b'event:token\ndata:{"type":"token","token":"hi"}\n\n',
              b'event:done\ndata:{"type":"done","usage":{}}\n\n']
    result = fake_smoke(FakeService(streams={SMOKE_MESSAGE: frames}))
    assert result.returncode == 0, result.stdout
    assert "sent 1 tokens and done" in result.stdout


def test_a_frame_after_done_fails_the_stream_step() -> None:
    frames = [*good_stream(), sse({"type": "token", "token": "late"})]
    result = fake_smoke(FakeService(streams={SMOKE_MESSAGE: frames}))
    assert result.returncode == 1
    assert "a token frame after the done frame" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize(("path", "step"), [("/ready", "ready"), ("/chat", "chat")])
def test_a_body_trickled_a_byte_at_a_time_fails_within_the_timeout(path: str,
                                                                   step: str) -> None:
    started = time.monotonic()
    result = fake_smoke(FakeService(trickle=frozenset({path})), "--timeout", "2")
    assert time.monotonic() - started < 10  # the fake would trickle for a minute
    assert result.returncode == 1
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"FAIL  {step}") and "within the 2 s timeout" in last


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_a_timeout_that_is_not_a_finite_positive_number_is_a_usage_error(value: str) -> None:
    result = smoke("http://127.0.0.1:9", f"--timeout={value}")
    assert result.returncode == 2
    assert "argument --timeout: must be" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "sent"), [(("--key", "k-123"), "Bearer k-123"), ((), None)])
def test_smoke_and_eval_send_the_key_as_a_bearer_token(
        tmp_path: Path, args: tuple[str, ...], sent: str | None) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "hi", "input": "hi", "checks": [{"contains": "hello"}]}\n')
    fake = FakeService()
    with thread_server(fake.app()) as live:
        assert smoke(live.url, *args).returncode == 0
        assert hello_ship("eval", str(cases), "--url", live.url, "--route", "chain",
                          *args).returncode == 0
    assert fake.keys == [sent] * 4  # /ready, /chat and /chat/stream, then eval's request
