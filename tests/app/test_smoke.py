"""`hello-ship smoke URL` as an operator runs it after a deploy, against real servers."""

from __future__ import annotations

import socket
import subprocess
import sys

from providers.types import Finish, Usage
from tests.fakes import ScriptedProvider, Sleep, words
from tests.servers import app_server, settings_from


def smoke(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "smoke", url, *args],
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
