"""Connections bounded by the service itself, against a real `hello-ship serve` over real
sockets: a huge request head, slow heads and bodies, idle and surplus connections, HTTP/1.0
clients and readers that stop reading."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx
import orjson
import pytest

from tests.servers import ServiceProcess, service_process

MAX_HEADER_BYTES = 16_384


def connect(service: ServiceProcess) -> socket.socket:
    address = urlparse(service.url)
    return socket.create_connection((address.hostname, address.port), timeout=10)


def read_until_closed(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout_s)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def parse(response: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    """Status line, headers (lowercase names, every value), body."""
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, body


def assert_envelope(response: bytes, status: int, code: str) -> None:
    status_line, headers, body = parse(response)
    assert status_line.startswith(f"HTTP/1.1 {status} "), status_line
    assert headers["content-type"] == ["application/json"]
    assert headers["connection"] == ["close"]
    error = orjson.loads(body)["error"]
    assert error["code"] == code
    assert error["request_id"] == headers["x-request-id"][0]


def rss_kib(service: ServiceProcess) -> int:
    status = Path(f"/proc/{service.proc.pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1])


def health(service: ServiceProcess) -> int:
    with httpx.Client(timeout=5) as client:
        return client.get(service.url + "/health").status_code


@contextmanager
def serving(**env: str) -> Iterator[ServiceProcess]:
    with service_process(env) as service:
        yield service


def test_a_huge_request_head_is_answered_431_and_never_held() -> None:
    with serving() as service:
        sock = connect(service)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_048_576
                     + b"\r\n\r\n")
        assert_envelope(read_until_closed(sock), 431, "headers_too_large")
        sock.close()
        # Under the cap, the same request is served.
        with httpx.Client(timeout=5) as client:
            assert client.get(service.url + "/health",
                              headers={"X-Big": "a" * 8000}).status_code == 200


def test_twenty_unfinished_megabyte_heads_do_not_grow_the_process() -> None:
    """Each sends 2 MB of header and never ends it, holding its connection open; the server
    refuses each at the cap, so nothing of the rest is ever read or kept."""
    with serving() as service, ExitStack() as held:
        health(service)
        before = rss_kib(service)
        refused = 0
        for _ in range(20):
            sock = held.enter_context(connect(service))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(32):
                    sock.sendall(b"a" * 65536)
            except OSError:  # the server closed it: what it refused it did not buffer
                pass
            response = read_until_closed(sock, timeout_s=5)
            refused += response.startswith(b"HTTP/1.1 431 ")
        grown_kib = rss_kib(service) - before
        assert refused == 20
        assert grown_kib < 8 * 1024, f"the service grew by {grown_kib} KiB"
        assert health(service) == 200


def test_a_slowloris_head_is_answered_408_at_its_deadline_and_others_are_served() -> None:
    with serving(HEADER_TIMEOUT_S="1") as service:
        sock = connect(service)
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        sock.settimeout(0.3)
        closed = b""
        for byte in b"Host: example.com\r\nX-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
                closed = sock.recv(65536)
            except TimeoutError:
                assert health(service) == 200  # everyone else is served meanwhile
                continue
            except OSError:
                break
            if closed:
                break
        elapsed = time.monotonic() - started
        assert_envelope(closed + read_until_closed(sock), 408, "request_timeout")
        assert 0.9 < elapsed < 4, elapsed
        sock.close()


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline() -> None:
    with serving(HEADER_TIMEOUT_S="1") as service, connect(service) as idle:
        started = time.monotonic()
        assert read_until_closed(idle) == b""  # nothing to answer: closed silently
        assert 0.9 < time.monotonic() - started < 4
        service.wait_for_log("connections_refused", reasons={"idle": 1})


def test_a_trickled_body_is_answered_408_at_its_deadline() -> None:
    with serving(BODY_TIMEOUT_S="1") as service, connect(service) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        sock.settimeout(0.3)
        response = b""
        for _ in range(40):
            try:
                sock.sendall(b" ")
                response = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if response:
                break
        assert_envelope(response + read_until_closed(sock), 408, "body_timeout")
        assert 0.9 < time.monotonic() - started < 4
        assert health(service) == 200


def test_the_last_read_of_a_large_body_is_no_head() -> None:
    """A body whose tail arrives in a read of its own, larger than the head cap, is body."""
    body = orjson.dumps({"message": "x" * 30_000})  # under MAX_INPUT_CHARS, over the head cap
    with serving() as service, connect(service) as sock:
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.2)  # the head is parsed before the body comes
        sock.sendall(body)
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]


def test_a_body_the_service_did_not_want_is_not_waited_for() -> None:
    """/health answers at once; the rest of the body it never reads ends the connection."""
    with serving(BODY_TIMEOUT_S="30") as service, connect(service) as sock:
        sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
        started = time.monotonic()
        response = read_until_closed(sock)
        assert response.startswith(b"HTTP/1.1 405 ")
        assert time.monotonic() - started < 3
        # It says so, or a keep-alive client would send its next request down a closing socket.
        assert parse(response)[1]["connection"] == ["close"]


def test_an_answer_after_the_whole_body_keeps_the_connection() -> None:
    with serving() as service, connect(service) as sock:
        for _ in range(2):
            sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
            response = sock.recv(65536)
            while not response.endswith(b"}"):  # the JSON body may come in a second read
                response += sock.recv(65536)
            assert response.startswith(b"HTTP/1.1 405 ")
            assert "connection" not in parse(response)[1]


def test_connections_beyond_the_cap_are_refused_cleanly() -> None:
    with serving(MAX_CONNECTIONS="3", HEADER_TIMEOUT_S="30") as service, ExitStack() as held:
        for _ in range(3):
            held.enter_context(connect(service))
        time.sleep(0.2)  # the server has accepted them
        with connect(service) as surplus:
            response = read_until_closed(surplus)
        assert_envelope(response, 503, "too_many_connections")
        assert parse(response)[1]["retry-after"] == ["1"]
        held.close()  # the three leave: there is room again
        deadline = time.monotonic() + 5
        while True:
            try:
                assert health(service) == 200
                break
            except (httpx.HTTPError, AssertionError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        service.wait_for_log("connections_refused", reasons={"max_connections": 1})


def test_an_http_10_client_gets_a_valid_10_stream() -> None:
    """Like `curl --http1.0`: no chunked encoding, one `Connection: close`, the body ends with
    the connection."""
    with serving() as service, connect(service) as sock:
        body = orjson.dumps({"message": "hello there", "max_tokens": 20})
        sock.sendall(b"POST /chat/stream HTTP/1.0\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        status, headers, stream = parse(read_until_closed(sock))
    assert status.startswith("HTTP/1.1 200 ")
    assert "transfer-encoding" not in headers
    assert "content-length" not in headers
    assert headers["connection"] == ["close"]
    assert headers["content-type"][0].startswith("text/event-stream")
    events = [line for line in stream.decode().splitlines() if line.startswith("event: ")]
    assert events[0] == "event: meta" and events[-1] == "event: done"
    assert "event: token" in events


def test_an_http_10_json_answer_keeps_its_length() -> None:
    with serving() as service, connect(service) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        status, headers, body = parse(read_until_closed(sock))
    assert status.startswith("HTTP/1.1 200 ")
    assert headers["content-length"] == [str(len(body))]
    assert headers["connection"] == ["close"]
    assert orjson.loads(body) == {"status": "ok"}


def test_a_stalled_reader_is_dropped_at_send_timeout_without_an_error_line() -> None:
    """About 100 KB of answer to a client that never reads, with a modest receive window of
    its own (32 KB, as Linux doubles 16 KB): the service's small buffers fill, the send waits
    SEND_TIMEOUT_S, and the stream is dropped and logged as the client's doing; with no resume
    grace, the answer ends there. (With the kernel's own send buffer, grown to megabytes, the
    answer was sent and billed in full.) Paced, so the answer outlasts the send timeout."""
    answer_tokens = 6000
    env = {"SEND_TIMEOUT_S": "1", "DEMO_TTFT_MS": "0", "DEMO_TOKEN_DELAY_MS": "1",
           "DEMO_ANSWER_TOKENS": str(answer_tokens), "MAX_OUTPUT_TOKENS": str(answer_tokens)}
    with serving(**env) as service, socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        address = urlparse(service.url)
        sock.connect((address.hostname, address.port))
        body = orjson.dumps({"message": "hi", "max_tokens": answer_tokens})
        started = time.monotonic()
        sock.sendall(b"POST /chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        end = service.wait_for_log("request_end", timeout=10)
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # whatever the server logs about the drop, it has logged now
        records = service.log_records()
    assert end["status"] == "client_stalled"
    # Paced, the buffers fill after a few seconds; then SEND_TIMEOUT_S, and the answer is cut.
    assert 1 <= elapsed < 8, elapsed
    assert end["tokens_emitted"] < answer_tokens // 2
    errors = [r for r in records if r["level"] in ("error", "critical")]
    assert errors == []


def stalled_stream(service: ServiceProcess, answer_tokens: int) -> socket.socket:
    """A client with a modest receive window that asks for a long answer and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    address = urlparse(service.url)
    sock.connect((address.hostname, address.port))
    body = orjson.dumps({"message": "hi", "max_tokens": answer_tokens})
    sock.sendall(b"POST /chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    return sock


def test_a_dropped_stalled_stream_frees_its_connection_at_once() -> None:
    """The drop cuts the connection rather than waiting to send what the reader never takes:
    two stalled readers do not keep a cap of two connections full."""
    env = {"SEND_TIMEOUT_S": "1", "MAX_CONNECTIONS": "2", "DEMO_TTFT_MS": "0",
           "DEMO_TOKEN_DELAY_MS": "1", "DEMO_ANSWER_TOKENS": "6000",
           "MAX_OUTPUT_TOKENS": "6000"}
    with serving(**env) as service, ExitStack() as held:
        for _ in range(2):
            held.enter_context(stalled_stream(service, 6000))
        deadline = time.monotonic() + 10
        while len([r for r in service.log_records() if r.get("event") == "request_end"]) < 2:
            assert time.monotonic() < deadline, "the stalled streams were never dropped"
            time.sleep(0.05)
        time.sleep(0.2)
        assert [health(service) for _ in range(3)] == [200, 200, 200]


def test_trailers_count_against_the_head_cap() -> None:
    """Trailers after a chunked body are headers too: endless ones end the connection."""
    with serving() as service, connect(service) as sock:
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n")
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe: the server cut it off
            for _ in range(256):
                sock.sendall(b"X-T: " + b"a" * 65_000 + b"\r\n")
                sent += 65_000
                time.sleep(0.001)
        assert sent < 4 * 1024 * 1024
        assert health(service) == 200


def test_a_body_tail_read_with_the_next_head_is_no_head() -> None:
    """Pipelined: the last 20 KB of one request's body arrive in one read with the start of
    the next request's head; both are answered."""
    with serving() as service, connect(service) as sock:
        body = orjson.dumps({"message": "a" * 30_000, "max_tokens": 5})
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (len(body), body[:-20_000]))
        time.sleep(0.2)
        sock.sendall(body[-20_000:] + b"GET /health HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)
        sock.sendall(b"Connection: close\r\n\r\n")
        responses = read_until_closed(sock)
    assert responses.count(b"HTTP/1.1 200 OK\r\n") == 2, responses[:300]


def test_stray_line_ends_between_requests_do_not_cut_an_answer() -> None:
    """RFC 9112 says to ignore empty lines before a request: one sent while an answer
    streams starts no head deadline that could cut it."""
    env = {"HEADER_TIMEOUT_S": "1", "DEMO_TTFT_MS": "0", "DEMO_TOKEN_DELAY_MS": "80",
           "DEMO_ANSWER_TOKENS": "30"}
    with serving(**env) as service, connect(service) as sock:
        body = orjson.dumps({"message": "hello", "max_tokens": 30})
        sock.sendall(b"POST /chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        time.sleep(0.2)
        sock.sendall(b"\r\n")
        stream = read_until_closed(sock)
        end = service.wait_for_log("request_end")
    assert b"event: done" in stream
    assert end["status"] == "ok" and end["latency_ms"] > 1500


def test_malformed_requests_are_counted_not_each_logged() -> None:
    with serving() as service:
        for _ in range(5):
            with connect(service) as sock:
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
                assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
        assert health(service) == 200
        service.wait_for_log("connections_refused", reasons={"bad_request": 1})
        records = service.log_records()
    assert not [r for r in records if r["event"] == "Invalid HTTP request received."]
