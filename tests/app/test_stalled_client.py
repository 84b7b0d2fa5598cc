"""A client that stops reading is dropped after SEND_TIMEOUT_S, and the upstream call with it."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import httpx
import orjson

from tests.fakes import ScriptedProvider
from tests.logcapture import captured_logs
from tests.servers import app_server, settings_from


def test_a_client_that_stops_reading_is_dropped() -> None:
    provider = ScriptedProvider(["x" * 2048] * 100_000)  # ~200 MB if nobody stopped it
    settings = settings_from(SEND_TIMEOUT_S="0.5", MAX_OUTPUT_TOKENS="200000")
    with captured_logs() as logs, app_server(settings, provider) as live:
        address = urlparse(live.url)
        body = orjson.dumps({"message": "flood me"})
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((address.hostname, address.port))
        stalled.sendall(b"POST /chat/stream HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                        % (len(body), body))
        try:
            deadline = time.monotonic() + 10
            while provider.closed_early == 0:
                assert time.monotonic() < deadline, "the stalled stream was never dropped"
                time.sleep(0.05)
            with httpx.Client(timeout=5) as client:  # everyone else is still served
                assert client.get(live.url + "/health").status_code == 200
        finally:
            stalled.close()
    assert provider.finished == 0
    (end,) = logs.records("request_end")
    assert end["status"] == "client_stalled"
    assert 0 < end["tokens_emitted"] < 100_000
