"""The official JavaScript `openai` client (npm, pinned in tests/js/package-lock.json) against
/v1: a client the service does not control, so its parsing of our frames and errors is the
judge, not our own reading of OpenAI's documentation. `make test` installs node and the package
(scripts/install-test-tools); tests/js/chat.mjs drives the client and prints what it saw."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.settings import Settings
from tests.programs import required_tool
from tests.servers import FAST_DEMO, app_server
from tests.tenant_keys import ACME_KEY, config_env, tenants_toml
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import OPENAI

JS = Path(__file__).resolve().parents[1] / "js"
VENDOR_USAGE = {"prompt_tokens": 17, "completion_tokens": 9, "total_tokens": 26}


def openai_package() -> None:
    """Like a missing program: skipped on a developer's machine, failed under CI=true."""
    if not (JS / "node_modules" / "openai" / "package.json").is_file():
        reason = "the openai npm package is not installed in tests/js (make test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def run_client(node: str, base_url: str, key: str) -> dict[str, Any]:
    # OPENAI_* from the developer's shell must not reach the client: the argv decides.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run([node, str(JS / "chat.mjs"), base_url, key], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = orjson.loads(done.stdout)
    return seen


def test_the_javascript_openai_client_reads_answers_streams_and_errors(
        upstream_pool: UpstreamPool, tmp_path: Path) -> None:
    node = required_tool("node")
    openai_package()
    upstream = upstream_pool.get(OPENAI)
    # A real tenant key, so the client's own `Authorization: Bearer` header is what lets it in.
    settings = Settings.from_env({**FAST_DEMO, **OPENAI.env(upstream),
                                  **config_env(tmp_path, tenants_toml())})
    with app_server(settings) as live:
        seen = run_client(node, live.url + "/v1", ACME_KEY)
    collected, streamed = seen["collected"], seen["streamed"]
    assert "default" in seen["models"]
    assert collected["object"] == "chat.completion"
    assert collected["text"] == streamed["text"] == "Hello, world!"  # the vendor's words
    assert collected["usage"] == streamed["usage"] == VENDOR_USAGE  # and its counts
    assert collected["finishReason"] == "stop"
    assert streamed["finishReasons"] == ["stop"]
    assert len(streamed["ids"]) == 1  # every chunk of one completion carries the same id
    assert seen["badModel"] == {"name": "NotFoundError", "isNotFound": True, "status": 404,
                                "code": "model_not_found", "param": "model",
                                "type": "invalid_request_error"}
    assert upstream.outcomes == ["completed", "completed"]  # the bad model never reached it
