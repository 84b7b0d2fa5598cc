"""What the answer cache's service tests share: the vendor's answer, the settings, and a
wait for the cache's writer, which stores answers after their responses, off the clients'
path."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from config.settings import Settings
from tests.servers import FAST_DEMO, ThreadServer
from tests.sse import parse_sse
from tests.tenant_keys import bearer, config_env, tenants_toml
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import OPENAI

QUESTION = "What is the refund policy for annual plans?"
ANSWER = ("Annual plans can be refunded in full within 30 days of purchase. ",
          "After that, the unused months are refunded pro rata.")
ROUTE = "openai/gpt-4o-mini"
DEGRADED = "Our assistant is taking a short break."


@pytest.fixture
def faq_vendor(upstream_pool: UpstreamPool) -> Upstream:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(tokens=ANSWER)
    return upstream


def settings(upstream: Upstream, tmp_path: Path | None = None, *, acme: dict[str, Any] | None
             = None, globex: dict[str, Any] | None = None, **env: str) -> Settings:
    values = {**FAST_DEMO, **OPENAI.env(upstream), "RETRY_BASE_S": "0.01",
              "DEGRADED_MESSAGE": DEGRADED}
    if tmp_path is not None:
        values.update(config_env(tmp_path, tenants_toml(acme, globex)))
    return Settings.from_env({**values, **env})


def stored() -> float:
    return REGISTRY.get_sample_value("hello_ship_cache_writes_total", {"outcome": "stored"}) or 0.0


Writes = Callable[..., None]


@pytest.fixture
def writes() -> Iterator[Writes]:
    """Waits until the cache's writer has stored `n` answers more than when the test began:
    writes happen after the response, off the client's path."""
    start = stored()

    def wait(n: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while stored() < start + n:
            assert time.monotonic() < deadline, f"{stored() - start} of {n} answers stored"
            time.sleep(0.01)
    yield wait


def ask(client: httpx.Client, live: ThreadServer, message: str,
        key: str | None = None, **body: Any) -> list[dict[str, Any]]:
    response = client.post(live.url + "/chat/stream", json={"message": message, **body},
                           headers=bearer(key) if key else {})
    assert response.status_code == 200, response.text
    return [item.data for item in parse_sse(response.text) if item.is_event]


def answer_of(events: list[dict[str, Any]]) -> str:
    return "".join(str(e["token"]) for e in events if e["type"] == "token")


def chats(upstream: Upstream) -> int:
    return sum(1 for r in upstream.requests if r.path.endswith("/chat/completions"))
