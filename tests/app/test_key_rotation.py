"""Keys rotated without a restart, in `hello-ship serve` as deployed: tenant keys in the config
file, a provider key in a file that is swapped the way Kubernetes updates a mounted Secret,
traffic flowing all along, SIGHUP and the file watch both."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tenancy.identity import hashed_form
from tests.servers import ServiceProcess, service_process
from tests.sse import parse_sse
from tests.upstreams.common import Upstream
from tests.upstreams.pool import UpstreamPool
from tests.upstreams.vendors import OPENAI

OLD_TENANT_KEY = "hs_old_tenant_key_0000000000000000000000"
NEW_TENANT_KEY = "hs_new_tenant_key_1111111111111111111111"
ADMIN_KEY = "hs_admin_key_2222222222222222222222222222"
OLD_VENDOR_KEY = "sk-test-openai-0123456789abcdef"  # what the fake vendor accepts at first
NEW_VENDOR_KEY = "sk-test-openai-rotated-fedcba9876543210"
ROUTE = f"openai/{OPENAI.model}"


class SecretVolume:
    """A directory laid out as the kubelet lays out a mounted Secret: each key file is a
    symlink through `..data`, and an update repoints `..data` at a new directory at once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self._version = 0

    def publish(self, files: dict[str, str]) -> None:
        self._version += 1
        target = self.root / f"..v{self._version}"
        target.mkdir()
        for name, text in files.items():
            (target / name).write_text(text)
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        staged = self.root / "..data_tmp"
        staged.symlink_to(target.name)
        os.replace(staged, self.root / "..data")

    def path(self, name: str) -> str:
        return str(self.root / name)


def write_atomically(path: Path, text: str) -> None:
    staged = path.with_suffix(".staged")
    staged.write_text(text)
    os.replace(staged, path)


def config_text(upstream: Upstream, key_file: str, tenant_keys: list[str],
                timeout_s: int = 5) -> str:
    keys = ", ".join(f'"{hashed_form(key)}"' for key in tenant_keys)
    return f"""
[[routes]]
provider = "openai"
model = "{OPENAI.model}"
base_url = "{upstream.url}/v1"
api_key_file = "{key_file}"
timeout_s = {timeout_s}

[tenants.acme]
keys = [{keys}]

[admin]
keys = ["{hashed_form(ADMIN_KEY)}"]
"""


@dataclass
class Traffic:
    """Streamed answers one after another with whichever tenant key is current."""

    url: str
    key: str
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                response = client.post(f"{self.url}/chat/stream",
                                       headers={"Authorization": f"Bearer {self.key}"},
                                       json={"message": "hello"})
                events = [item for item in parse_sse(response.text) if item.is_event] \
                    if response.status_code == 200 else []
                if not events or events[-1].event != "done":
                    self.failures.append(f"{response.status_code} {response.text[:300]}")
                else:
                    self.answered += 1


@contextmanager
def steady_traffic(url: str, key: str) -> Iterator[Traffic]:
    traffic = Traffic(url, key)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        yield traffic
    finally:
        traffic.stop.set()
        thread.join(timeout=15)


def status_with(service: ServiceProcess, key: str) -> int:
    response = httpx.post(f"{service.url}/chat", headers={"Authorization": f"Bearer {key}"},
                          json={"message": "hello"}, timeout=10)
    return response.status_code


def reloads(service: ServiceProcess, result: str) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=10,
                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
    for line in text.splitlines():
        if line.startswith(f'hello_ship_config_reloads_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def vendor_upstream(upstream_pool: UpstreamPool) -> Upstream:
    return upstream_pool.get(OPENAI)


@pytest.fixture
def deployed(tmp_path: Path, vendor_upstream: Upstream) -> Iterator[tuple[ServiceProcess, Path,
                                                                          SecretVolume]]:
    """The service with its config file and a Secret volume holding the vendor key, watched
    every 0.2 s, and tenant `acme` holding the old key."""
    keys = SecretVolume(tmp_path / "keys")
    keys.publish({"openai": OLD_VENDOR_KEY + "\n"})
    config = tmp_path / "hello-ship.toml"
    config.write_text(config_text(vendor_upstream, keys.path("openai"), [OLD_TENANT_KEY]))
    env = {"HELLO_SHIP_CONFIG": str(config), "CONFIG_WATCH_S": "0.2"}
    with service_process(env) as service:
        yield service, config, keys


def test_tenant_and_vendor_keys_rotate_under_steady_traffic_without_one_failed_request(
        deployed: tuple[ServiceProcess, Path, SecretVolume], vendor_upstream: Upstream) -> None:
    service, config, keys = deployed
    key_file = keys.path("openai")
    with steady_traffic(service.url, OLD_TENANT_KEY) as traffic:
        # 1. The tenant gets a second key; clients move to it once it is in force.
        write_atomically(config, config_text(vendor_upstream, key_file,
                                             [OLD_TENANT_KEY, NEW_TENANT_KEY]))
        service.wait_for_log("config_reloaded", timeout=10, trigger="file_changed",
                             keys_rotated=[])
        traffic.key = NEW_TENANT_KEY
        # 2. The vendor issues a second key; the Secret is updated as the kubelet does it.
        vendor_upstream.also_accepted.add(NEW_VENDOR_KEY)
        keys.publish({"openai": NEW_VENDOR_KEY + "\n"})
        service.wait_for_log("config_reloaded", timeout=10, keys_rotated=[ROUTE])
        answered = traffic.answered
        wait_until(lambda: traffic.answered >= answered + 3)
        # ...and revokes the old one.
        vendor_upstream.api_key = NEW_VENDOR_KEY
        vendor_upstream.also_accepted.clear()
        # 3. The old tenant key goes, on SIGHUP this time.
        write_atomically(config, config_text(vendor_upstream, key_file, [NEW_TENANT_KEY]))
        service.proc.send_signal(signal.SIGHUP)
        service.wait_for_log("config_reloaded", timeout=10, trigger="sighup")
        answered = traffic.answered
        wait_until(lambda: traffic.answered >= answered + 3)

    assert traffic.failures == []
    assert traffic.answered >= 10
    # The logs tell which of the tenant's keys each request came with: the old one's id
    # stops appearing once its clients have moved.
    key_ids = [record["key_id"] for record in events(service, "request_start")]
    old_id, new_id = (hashed_form(key).removeprefix("sha256:")[:12]
                      for key in (OLD_TENANT_KEY, NEW_TENANT_KEY))
    assert key_ids[0] == old_id
    assert key_ids[-1] == new_id
    assert set(key_ids) == {old_id, new_id}
    assert status_with(service, OLD_TENANT_KEY) == 401
    assert status_with(service, NEW_TENANT_KEY) == 200
    assert vendor_upstream.requests[-1].headers["authorization"] == f"Bearer {NEW_VENDOR_KEY}"
    assert reloads(service, "applied") >= 3
    assert reloads(service, "failed") == 0
    logged = "".join(service.lines)
    for secret in (OLD_VENDOR_KEY, NEW_VENDOR_KEY, OLD_TENANT_KEY, NEW_TENANT_KEY):
        assert secret not in logged


def test_a_broken_file_changes_nothing_and_says_why(
        deployed: tuple[ServiceProcess, Path, SecretVolume], vendor_upstream: Upstream) -> None:
    service, config, keys = deployed
    key_file = keys.path("openai")
    good = config_text(vendor_upstream, key_file, [OLD_TENANT_KEY])

    # Not TOML: the old tenant key keeps working, the one the broken file adds does not.
    write_atomically(config, config_text(vendor_upstream, key_file,
                                         [OLD_TENANT_KEY, NEW_TENANT_KEY]) + "\n[tenants.acme\n")
    failed = service.wait_for_log("config_reload_failed", timeout=10)
    assert "is not valid TOML" in failed["reason"]
    assert status_with(service, OLD_TENANT_KEY) == 200
    assert status_with(service, NEW_TENANT_KEY) == 401

    # Valid TOML, a value out of range: refused in full, nothing of it applied.
    write_atomically(config, config_text(vendor_upstream, key_file, [NEW_TENANT_KEY])
                     .replace("[tenants.acme]\n", "[tenants.acme]\nrpm = -1\n"))
    wait_until(lambda: len(events(service, "config_reload_failed")) == 2)
    assert "tenants.acme.rpm" in events(service, "config_reload_failed")[-1]["reason"]
    assert status_with(service, OLD_TENANT_KEY) == 200
    assert status_with(service, NEW_TENANT_KEY) == 401

    # The key file caught empty mid-rotation: the running key stays.
    write_atomically(config, good)
    service.wait_for_log("config_reloaded", timeout=10)
    keys.publish({"openai": ""})
    wait_until(lambda: len(events(service, "config_reload_failed")) == 3)
    assert "its key is gone" in events(service, "config_reload_failed")[-1]["reason"]
    assert status_with(service, OLD_TENANT_KEY) == 200
    assert vendor_upstream.requests[-1].headers["authorization"] == f"Bearer {OLD_VENDOR_KEY}"
    assert reloads(service, "failed") == 3

    # A route setting changes: keys apply at once, the route waits for a restart and says so.
    write_atomically(config, config_text(vendor_upstream, key_file, [NEW_TENANT_KEY], timeout_s=9))
    keys.publish({"openai": OLD_VENDOR_KEY})
    reloaded = service.wait_for_log("config_reloaded", timeout=10, restart_needed=["routes"])
    assert reloaded["keys"] == 1
    assert status_with(service, NEW_TENANT_KEY) == 200
    assert OLD_VENDOR_KEY not in "".join(service.lines)


def events(service: ServiceProcess, name: str) -> list[dict[str, object]]:
    return [record for record in service.log_records() if record.get("event") == name]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_route_started_without_its_key_answers_once_the_file_appears(
        tmp_path: Path, vendor_upstream: Upstream) -> None:
    keys = SecretVolume(tmp_path / "keys")
    keys.publish({"other": "x"})  # the volume is there, the route's file is not yet
    config = tmp_path / "hello-ship.toml"
    write_atomically(config, config_text(vendor_upstream, keys.path("openai"), [OLD_TENANT_KEY]))
    env = {"HELLO_SHIP_CONFIG": str(config), "CONFIG_WATCH_S": "0.2"}
    with service_process(env) as service:
        assert status_with(service, OLD_TENANT_KEY) == 503
        keys.publish({"openai": OLD_VENDOR_KEY})
        service.wait_for_log("config_reloaded", timeout=10, keys_rotated=[ROUTE])
        assert status_with(service, OLD_TENANT_KEY) == 200
        wait_until(lambda: httpx.get(f"{service.url}/ready", timeout=10).status_code == 200)


def test_a_sighup_while_the_service_starts_does_not_end_it() -> None:
    """Operators send SIGHUP after writing a file, whether or not a restart is under way."""
    with service_process(on_first_line=lambda proc: proc.send_signal(signal.SIGHUP)) as service:
        assert service.log_records()[0]["event"] != "config_reloaded"  # it was still starting
        assert httpx.get(f"{service.url}/health", timeout=10).status_code == 200
        service.proc.send_signal(signal.SIGHUP)
        service.wait_for_log("config_reloaded", trigger="sighup")
        assert service.proc.poll() is None
