"""The caller, not the socket: open mode, route pinning and `/metrics` behind a real nginx on
the same host, the client address in the logs, and one credential per request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.callers import client_address, forwarded_for, is_local
from config.connections import read_trusted_proxies
from config.env import EnvReader, SettingsError
from tests.nginx_server import CLIENT_ADDRESS, Nginx, nginx_proxy
from tests.servers import ServiceProcess, app_server, service_process, settings_from
from tests.tenant_keys import ACME_KEY, bearer, config_env, tenants_toml

BODY = {"message": "hello"}
# A client elsewhere reaches nginx on this host itself, or through another proxy in front.
FAR_CLIENTS = [pytest.param({CLIENT_ADDRESS: "203.0.113.9"}, id="far-client"),
               pytest.param({"X-Forwarded-For": "203.0.113.9"}, id="far-client-behind-a-proxy")]


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess,
                                                                             Nginx]]:
    """An open-mode `hello-ship serve` with nginx (the shipped config) in front of it on the
    same host."""
    with service_process({"TRUSTED_PROXIES": "127.0.0.1"}) as service, \
            nginx_proxy(service.url, tmp_path_factory.mktemp("nginx")) as nginx:
        yield service, nginx


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "open_mode_refused"
    assert error["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("far", FAR_CLIENTS)
@pytest.mark.parametrize(("method", "path", "headers"), [
    ("POST", "/chat", {}),
    ("POST", "/chat/stream", {}),
    ("POST", "/chat", {"X-Route": "demo/hello-1"}),
    ("GET", "/metrics", {}),
    ("GET", "/usage", {}),
])
def test_a_request_forwarded_for_a_far_client_is_refused_in_open_mode(
        behind_nginx: tuple[ServiceProcess, Nginx], method: str, path: str,
        headers: dict[str, str], far: dict[str, str]) -> None:
    _, nginx = behind_nginx
    with httpx.Client(timeout=10) as client:
        response = client.request(method, nginx.url + path, headers={**far, **headers},
                                  json=BODY if method == "POST" else None)
    assert_refused(response)


def test_a_request_from_this_host_through_nginx_is_served(
        behind_nginx: tuple[ServiceProcess, Nginx]) -> None:
    _, nginx = behind_nginx
    with httpx.Client(timeout=10) as client:
        assert client.post(nginx.url + "/chat", json=BODY).status_code == 200
        pinned = client.post(nginx.url + "/chat", json=BODY,
                             headers={"X-Route": "demo/hello-1"})
        assert pinned.status_code == 200 and pinned.json()["model_route"] == "demo/hello-1"
        assert client.get(nginx.url + "/metrics").status_code == 200


@pytest.mark.parametrize("far", FAR_CLIENTS)
def test_the_access_line_names_the_client_a_trusted_proxy_forwarded_for(
        behind_nginx: tuple[ServiceProcess, Nginx], far: dict[str, str]) -> None:
    service, nginx = behind_nginx
    with httpx.Client(timeout=10) as client:
        request_id = client.get(nginx.url + "/health", headers=far).headers["x-request-id"]
    line = service.wait_for_log("http_access", request_id=request_id)
    assert line["client_ip"] == "203.0.113.9"


@pytest.mark.parametrize("headers", [
    {"Forwarded": "for=203.0.113.9"},
    {"Forwarded": 'for="[2001:db8::17]:4711";proto=https'},
    {"Forwarded": "for=unknown"},
    {"X-Real-IP": "203.0.113.9"},
    {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"},
])
def test_a_forwarding_header_naming_anyone_else_makes_a_direct_request_remote(
        headers: dict[str, str]) -> None:
    with app_server(settings_from()) as live, httpx.Client(timeout=10) as client:
        assert_refused(client.post(live.url + "/chat", json=BODY, headers=headers))
        assert client.post(live.url + "/chat", json=BODY,
                           headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200


def test_two_authorization_headers_are_refused_not_guessed(tmp_path: Path) -> None:
    settings = settings_from(**config_env(tmp_path, tenants_toml()))
    with app_server(settings) as live, httpx.Client(timeout=10) as client:
        for path in ("/chat", "/usage", "/metrics"):
            response = client.request(
                "POST" if path == "/chat" else "GET", live.url + path,
                json=BODY if path == "/chat" else None,
                headers=[("Authorization", f"Bearer {ACME_KEY}"),
                         ("Authorization", "Bearer someone-else")])
            assert response.status_code == 400, path
            error = response.json()["error"]
            assert error["code"] == "ambiguous_credentials"
            assert error["request_id"] == response.headers["x-request-id"]
        assert client.post(live.url + "/chat", json=BODY,
                           headers=bearer(ACME_KEY)).status_code == 200


def scope(client: tuple[str, int] | None, *headers: tuple[str, str]) -> dict[str, object]:
    return {"client": client,
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers]}


@pytest.mark.parametrize(("value", "addresses"), [
    ("for=192.0.2.60;proto=http;by=203.0.113.43", ["192.0.2.60"]),
    ('for="[2001:db8:cafe::17]:4711"', ["2001:db8:cafe::17"]),
    ("for=192.0.2.43, for=198.51.100.17", ["192.0.2.43", "198.51.100.17"]),
    ("For=_hidden, by=10.0.0.1", ["_hidden"]),
    ('for="192.0.2.1:8080"', ["192.0.2.1"]),
])
def test_forwarded_names_its_for_nodes(value: str, addresses: list[str]) -> None:
    assert list(forwarded_for(b"forwarded", value)) == addresses


def test_a_unix_socket_caller_is_local_and_a_remote_peer_is_not() -> None:
    assert is_local(scope(None))
    assert is_local(scope(("::1", 1)))
    assert not is_local(scope(("10.0.0.5", 1)))
    assert not is_local(scope(("127.0.0.1", 1), ("X-Real-IP", "10.0.0.5")))


def test_the_client_address_is_believed_only_from_a_trusted_proxy() -> None:
    trusted = read_trusted_proxies(EnvReader({"TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}))
    forwarded = ("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.2.3")
    assert client_address(scope(("127.0.0.1", 1), forwarded), trusted) == "203.0.113.9"
    assert client_address(scope(("192.0.2.8", 1), forwarded), trusted) == "192.0.2.8"
    assert client_address(scope(("127.0.0.1", 1), forwarded), ()) == "127.0.0.1"
    # Only an address is ever logged, never other text a header carried.
    assert client_address(scope(("127.0.0.1", 1), ("X-Forwarded-For", "sk-not-an-ip")),
                          trusted) == "127.0.0.1"
    assert client_address(scope(None), trusted) is None
    # An IPv6 zone may hold any text: not an address to log.
    zoned = ("X-Forwarded-For", "fe80::1%\x1b[31m DROP TABLE users, 127.0.0.1")
    assert client_address(scope(("127.0.0.1", 1), zoned), trusted) == "127.0.0.1"
    assert client_address(scope(("127.0.0.1", 1), ("X-Forwarded-For", "2001:DB8::0:1")),
                          trusted) == "2001:db8::1"


def test_trusted_proxies_must_be_addresses_or_cidrs() -> None:
    with pytest.raises(SettingsError, match=r"TRUSTED_PROXIES: 'proxy\.local' is not"):
        read_trusted_proxies(EnvReader({"TRUSTED_PROXIES": "10.0.0.1,proxy.local"}))
