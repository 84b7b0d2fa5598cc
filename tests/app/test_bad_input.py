"""Every kind of bad input gets the JSON envelope, the right status and a request id, and the
service keeps serving everyone else."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from tests.servers import ThreadServer, app_server, settings_from

LIMITS = {"MAX_INPUT_CHARS": "2000", "MAX_BODY_BYTES": "16384", "MAX_MESSAGES": "4"}


@pytest.fixture(scope="module")
def live() -> Iterator[ThreadServer]:
    with app_server(settings_from(**LIMITS)) as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as http:
        yield http


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert isinstance(error["message"], str) and error["message"]
    return error  # type: ignore[no-any-return]


def still_serving(live: ThreadServer) -> None:
    with httpx.Client(timeout=10) as fresh:
        answer = fresh.post(live.url + "/chat", json={"message": "still there?"})
    assert answer.status_code == 200 and answer.json()["answer"]


JSON = {"Content-Type": "application/json"}

CASES = [
    # (name, raw body, headers, status, code)
    ("malformed json", b'{"message": "hi"', JSON, 400, "invalid_json"),
    ("empty body", b"", JSON, 400, "invalid_json"),
    ("invalid utf-8", b'{"message": "caf\xe9"}', JSON, 400, "invalid_encoding"),
    ("no content type", b'{"message": "hi"}', {}, 415, "unsupported_media_type"),
    ("form content type", b"message=hi", {"Content-Type": "application/x-www-form-urlencoded"},
     415, "unsupported_media_type"),
    ("latin-1 charset", b'{"message": "hi"}',
     {"Content-Type": "application/json; charset=latin-1"}, 415, "unsupported_media_type"),
    ("json array", b'["hi"]', JSON, 422, "invalid_request"),
    ("missing message", b'{"feature": "x"}', JSON, 422, "invalid_request"),
    ("empty message", b'{"message": "   "}', JSON, 422, "invalid_request"),
    ("message and messages", b'{"message": "a", "messages": [{"role": "user", "content": "b"}]}',
     JSON, 422, "invalid_request"),
    ("message wrong type", b'{"message": 42}', JSON, 422, "invalid_request"),
    ("messages not a list", b'{"messages": "hi"}', JSON, 422, "invalid_request"),
    ("messages empty", b'{"messages": []}', JSON, 422, "invalid_request"),
    ("message item not object", b'{"messages": ["hi"]}', JSON, 422, "invalid_request"),
    ("unknown role", b'{"messages": [{"role": "wizard", "content": "hi"}]}',
     JSON, 422, "invalid_request"),
    ("no user message", b'{"messages": [{"role": "system", "content": "hi"}]}',
     JSON, 422, "invalid_request"),
    ("content wrong type", b'{"messages": [{"role": "user", "content": ["hi"]}]}',
     JSON, 422, "invalid_request"),
    ("unknown field", b'{"message": "hi", "max_token": 5}', JSON, 422, "invalid_request"),
    ("tenant in body", b'{"message": "hi", "tenant_id": "other"}', JSON, 422, "invalid_request"),
    ("max_tokens zero", b'{"message": "hi", "max_tokens": 0}', JSON, 422, "invalid_request"),
    ("max_tokens negative", b'{"message": "hi", "max_tokens": -5}', JSON, 422, "invalid_request"),
    ("max_tokens float", b'{"message": "hi", "max_tokens": 1.5}', JSON, 422, "invalid_request"),
    ("max_tokens string", b'{"message": "hi", "max_tokens": "10"}', JSON, 422, "invalid_request"),
    ("max_tokens bool", b'{"message": "hi", "max_tokens": true}', JSON, 422, "invalid_request"),
    ("bad feature", b'{"message": "hi", "feature": "has spaces"}', JSON, 422, "invalid_request"),
    ("message too long", b'{"message": "' + b"a" * 2001 + b'"}', JSON, 413, "input_too_large"),
    ("too many messages", b'{"messages": ['
     + b",".join([b'{"role": "user", "content": "x"}'] * 5) + b"]}", JSON, 413, "input_too_large"),
    ("body over the byte limit", b'{"message": "' + b"a" * 17000 + b'"}', JSON, 413,
     "body_too_large"),
]


@pytest.mark.parametrize("endpoint", ["/chat", "/chat/stream"])
@pytest.mark.parametrize(("name", "body", "headers", "status", "code"), CASES,
                         ids=[case[0] for case in CASES])
def test_bad_input_gets_the_envelope(live: ThreadServer, client: httpx.Client, endpoint: str,
                                     name: str, body: bytes, headers: dict[str, str],
                                     status: int, code: str) -> None:
    response = client.post(live.url + endpoint, content=body, headers=headers)
    assert_envelope(response, status, code)


MARK = "ZqxSecretMarker"
ECHO_BAIT = [
    {"message": "hi", f"{MARK} 4111 1111 1111 1111": 1},
    {"messages": [{"role": MARK, "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi", MARK: 1}]},
    {"message": "hi", "feature": MARK + " x"},
    {"message": "hi", "max_tokens": MARK},
    {"message": {MARK: MARK}},
]


@pytest.mark.parametrize("body", ECHO_BAIT)
def test_errors_never_echo_the_callers_input(live: ThreadServer, client: httpx.Client,
                                             body: dict[str, object]) -> None:
    response = client.post(live.url + "/chat", json=body)
    assert response.status_code == 422
    assert MARK not in response.text


def test_every_case_leaves_the_service_serving(live: ThreadServer) -> None:
    still_serving(live)


def test_unknown_route_and_wrong_method(live: ThreadServer, client: httpx.Client) -> None:
    assert_envelope(client.get(live.url + "/nope"), 404, "not_found")
    wrong = client.get(live.url + "/chat")
    assert_envelope(wrong, 405, "method_not_allowed")
    assert "POST" in wrong.headers["allow"]


def test_a_huge_declared_body_is_refused_without_reading_it(live: ThreadServer) -> None:
    """Content-Length says 50 MB: the answer comes before the body is even sent."""
    address = urlparse(live.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 52428800\r\n\r\n" + b'{"message": "')
        reply = b""
        while chunk := sock.recv(65536):  # the server closes the connection after answering
            reply += chunk
    head, _, body = reply.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert "connection: close" in head.lower()
    assert '"code":"body_too_large"' in body
    still_serving(live)


def test_a_huge_chunked_body_is_cut_off_at_the_limit(live: ThreadServer,
                                                      client: httpx.Client) -> None:
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"message": "'
        while sent < 50 * 2**20:
            sent += 65536
            yield b"a" * 65536

    started = time.monotonic()
    try:
        response = client.post(live.url + "/chat", content=endless(), headers=JSON)
    except httpx.HTTPError:
        pass  # the server may close while we still write; what matters is what it read
    else:
        assert_envelope(response, 413, "body_too_large")
    assert sent < 50 * 2**20
    assert time.monotonic() - started < 5
    still_serving(live)


def test_a_sane_request_id_is_kept_and_a_hostile_one_replaced(live: ThreadServer,
                                                             client: httpx.Client) -> None:
    kept = client.get(live.url + "/health", headers={"X-Request-ID": "abc-123.x:y"})
    assert kept.headers["x-request-id"] == "abc-123.x:y"
    hostile = client.get(live.url + "/health", headers={"X-Request-ID": 'a"b\tc' + "x" * 300})
    assert hostile.headers["x-request-id"].startswith("req_")
