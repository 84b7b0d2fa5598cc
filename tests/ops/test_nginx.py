"""The shipped nginx config (`nginx/hello-ship.conf`) in front of a real `hello-ship serve`:
tokens stream through it, quiet answers survive it, a client that leaves stops the vendor call,
nginx's own errors come in the service's JSON envelope, and one request id names a request
everywhere. Variants of the file show what its settings are for."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import uvicorn

from config.settings import Settings
from tests.nginx_server import SHIPPED, Nginx, free_port, nginx_proxy, replace_once
from tests.servers import ServiceProcess, service_process
from tests.sse import parse_sse
from tests.tenant_keys import ACME_KEY, bearer, config_env, tenants_toml
from tests.upstreams.common import Script, Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import OPENAI

DEFAULTS = Settings.from_env({})
NGINX_ID = re.compile(r"[0-9a-f]{32}")  # nginx's $request_id; the service's own start `req_`


# --- the file against the service's defaults -----------------------------------------------

def location(name: str) -> str:
    match = re.search(rf"location {re.escape(name)} \{{\n(.*?)\n    \}}", SHIPPED.read_text(),
                      re.DOTALL)
    assert match is not None, name
    return match.group(1)


def seconds(block: str, directive: str) -> float:
    match = re.search(rf"^\s*{directive}\s+(\d+)s;", block, re.MULTILINE)
    assert match is not None, directive
    return float(match.group(1))


def test_the_limits_in_the_file_fit_the_service_defaults() -> None:
    text = SHIPPED.read_text()
    size = re.search(r"client_max_body_size (\d+)m;", text)
    assert size is not None and int(size.group(1)) * 2**20 == DEFAULTS.max_body_bytes
    assert f"larger than {DEFAULTS.max_body_bytes} bytes" in text
    # Streams stay open on heartbeats; /chat waits for the service's own deadline.
    assert DEFAULTS.heartbeat_s < seconds(location("/chat/stream"), "proxy_read_timeout") \
        <= 4 * DEFAULTS.heartbeat_s
    assert seconds(location("/"), "proxy_read_timeout") > DEFAULTS.retry.request_timeout_s
    upstream = re.search(r"upstream hello_ship \{(.*?)\}", text, re.DOTALL)
    assert upstream is not None
    assert seconds(upstream.group(1), "keepalive_timeout") < uvicorn.Config("").timeout_keep_alive


def test_every_error_nginx_answers_itself_is_the_service_envelope() -> None:
    text = SHIPPED.read_text()
    pages = re.findall(r"error_page ([\d ]+) = /\.hello-ship/(\d+);", text)
    assert {code for codes, _ in pages for code in codes.split()} == {
        "400", "404", "413", "414", "494", "500", "502", "503", "504"}
    for _, target in pages:
        block = location(f"= /.hello-ship/{target}")
        assert "internal;" in block and "default_type application/json;" in block
        status, body = re.findall(r"return (\d+) '(.*)\\n';", block)[0]
        assert status == target
        error = json.loads(body.replace("$hello_ship_request_id", "abc"))["error"]
        assert set(error) == {"code", "message", "request_id"} and error["request_id"] == "abc"


def test_requests_through_nginx_share_one_kept_alive_connection_to_the_service(
        upstream_pool: UpstreamPool, tmp_path: Path) -> None:
    # A fake vendor stands in for the service: it records each request's client port.
    upstream = upstream_pool.get(OPENAI)
    with nginx_proxy(upstream.url, tmp_path) as nginx, httpx.Client(timeout=10) as client:
        for _ in range(3):
            client.get(nginx.url + "/v1/models", headers={"Connection": "close"})
    assert len({received.client_port for received in upstream.requests}) == 1


# --- tokens as they come ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def paced_service() -> Iterator[ServiceProcess]:
    """40 tokens 50 ms apart: a two-second answer."""
    with service_process({"DEMO_TTFT_MS": "20", "DEMO_TOKEN_DELAY_MS": "50",
                          "DEMO_ANSWER_TOKENS": "40"}) as service:
        yield service


def ignore_accel_buffering_and_http10(text: str) -> str:
    """Two of the three things that keep nginx from holding a stream back taken away: the
    service's `X-Accel-Buffering: no`, and HTTP/1.1 (nginx passes on each whole chunk of a
    chunked answer even when it buffers). Only `proxy_buffering off` is left."""
    text = replace_once(text, r"proxy_http_version 1\.1;", "proxy_http_version 1.0;")
    return replace_once(text, r"proxy_cache off;",
                        "proxy_cache off;\n    proxy_ignore_headers X-Accel-Buffering;")


def buffering_on(text: str) -> str:
    text = ignore_accel_buffering_and_http10(text)
    # Room for the whole answer: nginx sends it when the service has finished.
    return replace_once(text, r"proxy_buffering off;",
                        "proxy_buffering on;\n    proxy_buffers 16 64k;\n"
                        "    proxy_busy_buffers_size 128k;")


GZIP_EVERYWHERE = "gzip on; gzip_min_length 1; gzip_types text/event-stream application/json;"


@dataclass
class Timed:
    first_token_s: float
    done_s: float
    encoding: str | None


def timed_stream(url: str) -> Timed:
    """A stream read by a client that takes gzip, as browsers do."""
    started = time.monotonic()
    first = done = None
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", url + "/chat/stream", json={"message": "tell me"},
            headers={"Accept-Encoding": "gzip"}) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line == "event: token" and first is None:
                first = time.monotonic() - started
            elif line == "event: done":
                done = time.monotonic() - started
    assert first is not None and done is not None
    return Timed(first, done, reply.headers.get("content-encoding"))


@pytest.mark.parametrize(("edit", "http", "streams"), [
    pytest.param(None, "", True, id="shipped"),
    pytest.param(None, GZIP_EVERYWHERE, True, id="shipped-in-an-http-block-with-gzip-on"),
    pytest.param(ignore_accel_buffering_and_http10, "", True, id="proxy_buffering-off-alone"),
    pytest.param(buffering_on, "", False, id="proxy_buffering-on"),
])
def test_the_first_token_comes_through_nginx_long_before_the_end(
        paced_service: ServiceProcess, tmp_path: Path, edit: Callable[[str], str] | None,
        http: str, streams: bool) -> None:
    with nginx_proxy(paced_service.url, tmp_path, edit=edit, http=http) as nginx:
        timed = timed_stream(nginx.url)
    assert timed.done_s > 1.8  # 40 tokens 50 ms apart
    if streams:
        assert timed.first_token_s < timed.done_s / 2
        assert timed.encoding is None
    else:  # the test can tell: a buffering proxy holds the first token until the end
        assert timed.first_token_s > timed.done_s - 0.2


# --- quiet answers and heartbeats ------------------------------------------------------------

def read_timeouts(stream_s: int, other_s: int | None = None) -> Callable[[str], str]:
    def edit(text: str) -> str:
        text = replace_once(text, r"proxy_read_timeout 60s;", f"proxy_read_timeout {stream_s}s;")
        if other_s is not None:
            text = replace_once(text, r"proxy_read_timeout 150s;",
                                f"proxy_read_timeout {other_s}s;")
        return text
    return edit


def test_heartbeats_keep_a_40_s_quiet_answer_alive_through_a_20_s_read_timeout(
        tmp_path: Path) -> None:
    env = {"HEARTBEAT_S": "5", "DEMO_TTFT_MS": "40000", "TTFT_TIMEOUT_S": "60"}
    with service_process(env) as service, \
            nginx_proxy(service.url, tmp_path, edit=read_timeouts(20)) as nginx, \
            httpx.Client(timeout=60) as client:
        started = time.monotonic()
        reply = client.post(nginx.url + "/chat/stream", json={"message": "take your time"})
        took = time.monotonic() - started
    items = parse_sse(reply.text)
    assert reply.status_code == 200 and took > 40
    assert sum(item.comments == ["heartbeat"] for item in items) >= 7
    assert [item.event for item in items if item.is_event][-1] == "done"
    text = "".join(item.data["token"] for item in items if item.event == "token")
    assert text.startswith("Hello from the hello-ship demo model")


@pytest.fixture(scope="module")
def slow_service() -> Iterator[ServiceProcess]:
    """Five quiet seconds before each answer, and no heartbeats."""
    with service_process({"HEARTBEAT_S": "3600", "DEMO_TTFT_MS": "5000"}) as service:
        yield service


@pytest.fixture(scope="module")
def impatient_nginx(slow_service: ServiceProcess,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with nginx_proxy(slow_service.url, tmp_path_factory.mktemp("nginx"),
                     edit=read_timeouts(2, 1)) as nginx:
        yield nginx


def test_without_heartbeats_nginx_cuts_a_quiet_stream_at_its_read_timeout(
        impatient_nginx: Nginx) -> None:
    seen: list[str] = []
    started = time.monotonic()
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.RemoteProtocolError), \
            client.stream("POST", impatient_nginx.url + "/chat/stream",
                          json={"message": "take your time"}) as reply:
        for line in reply.iter_lines():
            seen.append(line)
    assert 1.5 < time.monotonic() - started < 4.5
    # The stream had begun (too late for a 504), and ends with no answer and no error frame.
    assert "retry: 3000" in seen and not [line for line in seen if line.startswith("event:")]


def test_a_service_that_does_not_answer_in_time_is_a_json_504(impatient_nginx: Nginx) -> None:
    with httpx.Client(timeout=10) as client:
        reply = client.post(impatient_nginx.url + "/chat", json={"message": "hello"})
    assert_nginx_envelope(reply, 504, "gateway_timeout")
    assert impatient_nginx.wait_for_access(reply.headers["x-request-id"])[
        "upstream_status"] == "504"


# --- a client that leaves --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/chat/stream", "/chat"])
def test_a_client_leaving_through_nginx_cancels_the_vendor_call_within_2_s(
        upstream_pool: UpstreamPool, tmp_path: Path, path: str) -> None:
    upstream = upstream_pool.get(OPENAI)
    upstream.script = Script(tokens=("Tokens keep coming. ",) * 200, token_delay_s=0.05)
    # A stream whose reader left is kept for RESUME_GRACE_S, for the reader to come back
    # (10 s by default); with 0 it ends when its reader goes, like /chat always does.
    env = {**OPENAI.env(upstream), "RESUME_GRACE_S": "0"}
    with service_process(env) as service, \
            nginx_proxy(service.url, tmp_path) as nginx:
        if path == "/chat/stream":
            with httpx.Client(timeout=10) as client, client.stream(
                    "POST", nginx.url + path, json={"message": "go on"}) as reply:
                next(line for line in reply.iter_lines() if line == "event: token")
        else:  # nothing to read before the end: leave once the vendor is at work
            leave_while_the_vendor_works(nginx, path, upstream)
        left = time.monotonic()
        assert upstream.wait_for_outcomes(1, timeout=5) == ["client_closed"]
        assert time.monotonic() - left < 2.0


def leave_while_the_vendor_works(nginx: Nginx, path: str, upstream: Upstream) -> None:
    address = urlparse(nginx.url)
    body = b'{"message": "go on"}'
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(b"POST %b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (path.encode(), len(body), body))
        deadline = time.monotonic() + 5
        while not any(r.path.endswith("/chat/completions") for r in upstream.requests):
            assert time.monotonic() < deadline, "the vendor got no request"
            time.sleep(0.01)
        time.sleep(0.2)  # tokens are flowing into the service's answer


# --- nginx's own errors and the service's ----------------------------------------------------

def assert_nginx_envelope(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    error: dict[str, Any] = reply.json()["error"]
    assert error["code"] == code and error["message"]
    assert error["request_id"] and error["request_id"] == reply.headers["x-request-id"]
    return error


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Tenants, and a demo model that breaks off after three tokens."""
    env = {**config_env(tmp_path_factory.mktemp("config"), tenants_toml()),
           "DEMO_FAIL_AFTER_TOKENS": "3"}
    with service_process(env) as service:
        yield service


@pytest.fixture(scope="module")
def keyed_nginx(keyed_service: ServiceProcess,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with nginx_proxy(keyed_service.url, tmp_path_factory.mktemp("nginx")) as nginx:
        yield nginx


def json_of_size(size: int) -> bytes:
    """A chat body of exactly `size` bytes."""
    return b'{"message": "' + b"x" * (size - 15) + b'"}'


def test_a_body_over_the_limit_is_nginx_s_json_413_and_one_at_it_reaches_the_service(
        keyed_nginx: Nginx) -> None:
    headers = {**bearer(ACME_KEY), "Content-Type": "application/json"}
    limit = DEFAULTS.max_body_bytes
    with httpx.Client(timeout=10) as client:
        over = client.post(keyed_nginx.url + "/chat", content=json_of_size(limit + 1),
                           headers=headers)
        at = client.post(keyed_nginx.url + "/chat", content=json_of_size(limit),
                         headers=headers)
    assert_nginx_envelope(over, 413, "body_too_large")
    assert keyed_nginx.wait_for_access(over.headers["x-request-id"])["upstream_status"] == ""
    # The service's own limits apply from there on: this one is too long a text.
    assert at.status_code == 413 and at.json()["error"]["code"] == "input_too_large"
    assert keyed_nginx.wait_for_access(at.headers["x-request-id"])["upstream_status"] == "413"


def test_a_stopped_service_is_a_json_502(tmp_path: Path) -> None:
    with nginx_proxy(f"http://127.0.0.1:{free_port()}", tmp_path) as nginx, \
            httpx.Client(timeout=10) as client:
        reply = client.post(nginx.url + "/chat", json={"message": "hello"},
                            headers={"X-Request-ID": "incident-drill-1"})
        streamed = client.post(nginx.url + "/chat/stream", json={"message": "hello"})
    error = assert_nginx_envelope(reply, 502, "service_unavailable")
    assert error["request_id"] == "incident-drill-1"
    assert reply.headers["retry-after"] == "5"
    assert_nginx_envelope(streamed, 502, "service_unavailable")


def raw_exchange(url: str, request: bytes) -> bytes:
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    pytest.param(b"GARBAGE\r\n\r\n", 400, "bad_request", id="no-request-line"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request",
                 id="two-hosts"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
                 431, "headers_too_large", id="header-too-large"),
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431,
                 "headers_too_large", id="uri-too-long"),
    pytest.param(b"GET /.hello-ship/502 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                 404, "not_found", id="an-error-page-asked-for"),
])
def test_a_request_nginx_refuses_itself_gets_the_json_envelope(
        keyed_nginx: Nginx, request_bytes: bytes, status: int, code: str) -> None:
    head, _, body = raw_exchange(keyed_nginx.url, request_bytes).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].split()[1] == str(status)
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert NGINX_ID.fullmatch(error["request_id"]) and headers["x-request-id"] == error[
        "request_id"]


# Statuses nginx answers itself too (but 401): its error pages must not take these over.
@pytest.mark.parametrize(("content", "headers", "status", "code"), [
    pytest.param(b"{not json", bearer(ACME_KEY), 400, "invalid_json", id="400"),
    pytest.param(b'{"message": "hi"}', {}, 401, "unauthorized", id="401"),
    pytest.param(json_of_size(40_000), bearer(ACME_KEY), 413, "input_too_large", id="413"),
    pytest.param(b'{"message": "hi"}', bearer(ACME_KEY), 502, "stream_interrupted", id="502"),
])
def test_the_service_s_own_errors_pass_through_nginx_unchanged(
        keyed_service: ServiceProcess, keyed_nginx: Nginx, content: bytes,
        headers: dict[str, str], status: int, code: str) -> None:
    def ask(url: str, request_id: str) -> httpx.Response:
        with httpx.Client(timeout=10) as client:
            return client.post(url + "/chat", content=content, headers={
                **headers, "Content-Type": "application/json", "X-Request-ID": request_id})

    direct, proxied = ask(keyed_service.url, "same-id"), ask(keyed_nginx.url, "same-id")
    assert (direct.status_code, proxied.status_code) == (status, status)
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    mine = {key: value for key, value in direct.json()["error"].items() if key != "incident_id"}
    theirs = {key: value for key, value in proxied.json()["error"].items()
              if key != "incident_id"}
    assert theirs == mine and mine["code"] == code and mine["request_id"] == "same-id"


# --- one request id --------------------------------------------------------------------------

@pytest.mark.parametrize("sent", [
    pytest.param(None, id="none"), pytest.param("client-trace.42", id="plain-token"),
    pytest.param("not a token", id="with-spaces"), pytest.param("x" * 129, id="too-long")])
def test_one_request_id_names_the_request_in_the_answer_and_both_logs(
        keyed_service: ServiceProcess, keyed_nginx: Nginx, sent: str | None) -> None:
    headers = {**bearer(ACME_KEY), **({"X-Request-ID": sent} if sent is not None else {})}
    with httpx.Client(timeout=10) as client:
        reply = client.post(keyed_nginx.url + "/chat/stream", json={"message": "hello"},
                            headers=headers)
    assert reply.status_code == 200
    request_id = reply.headers["x-request-id"]
    frames = [item.data for item in parse_sse(reply.text) if item.is_event]
    assert [frame["request_id"] for frame in frames if "request_id" in frame] == [
        request_id, request_id]  # the meta frame and the error frame the demo ends with
    if sent == "client-trace.42":  # a plain token: kept
        assert request_id == sent
    else:  # none, or one the service would not keep: nginx's own
        assert NGINX_ID.fullmatch(request_id)
    keyed_service.wait_for_log("http_access", request_id=request_id)
    assert keyed_nginx.wait_for_access(request_id)["status"] == 200
