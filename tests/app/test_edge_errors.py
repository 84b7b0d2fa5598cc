"""A bug anywhere below the edge still gets the JSON envelope, a request id and a safe log."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx

from providers.types import CompletionRequest, ProviderEvent
from tests.fakes import ScriptedProvider
from tests.logcapture import captured_logs
from tests.servers import app_server

SECRET = "-".join(["sk", "live", "leaked"])


class BrokenProvider:
    """Once armed, fails where the edge touches it (building the job, /ready), not in the
    pipeline; it works while the app is being built."""

    armed = False

    @property
    def route(self) -> str:
        if self.armed:
            raise RuntimeError(f"config holds {SECRET}")
        return "broken/model"

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]:
        raise AssertionError("never reached")
        yield  # pragma: no cover

    async def aclose(self) -> None:
        return None


def test_an_edge_bug_is_a_json_500_with_request_id_and_a_safe_log() -> None:
    broken = BrokenProvider()
    with captured_logs() as logs, app_server(provider=broken) as live, \
            httpx.Client(timeout=10) as client:
        broken.armed = True
        for response in (client.get(live.url + "/ready"),
                         client.post(live.url + "/chat", json={"message": "hi"}),
                         client.post(live.url + "/chat/stream", json={"message": "hi"})):
            assert response.status_code == 500
            assert response.headers["content-type"] == "application/json"
            error = response.json()["error"]
            assert error["code"] == "internal_error"
            assert error["request_id"] == response.headers["x-request-id"]
            assert SECRET not in response.text and "Traceback" not in response.text
        assert client.get(live.url + "/health").status_code == 200
    failures = logs.records("unhandled_error")
    assert len(failures) == 3
    assert all("RuntimeError" in f["exception"] for f in failures)
    assert not [line for line in logs.lines if SECRET in line]
    assert [r["status"] for r in logs.records("http_access")][:3] == [500, 500, 500]


class FailingCloseProvider(ScriptedProvider):
    async def aclose(self) -> None:
        raise RuntimeError(f"pool holds {SECRET}")


def test_a_provider_failing_to_close_at_shutdown_is_logged_safely() -> None:
    with captured_logs() as logs, app_server(provider=FailingCloseProvider(["hi"])):
        pass
    (failure,) = logs.records("provider_close_failed")
    assert "RuntimeError" in failure["exception"]
    assert not [line for line in logs.lines if SECRET in line]
    assert not logs.records("Application shutdown failed. Exiting.")
