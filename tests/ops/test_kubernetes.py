"""deploy/kubernetes: valid for the API server, and right for this service.

The manifests are read as the cluster reads them (the API schema), and their settings as the
service reads them (its own config reader, `hello-ship serve`, a running service answering
the probes), so a manifest and the code cannot drift apart unnoticed.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import kubernetes_validate
import pytest
import uvicorn
import yaml

from cli.main import main as hello_ship
from config.settings import Settings
from streaming.readiness import FIRST_ROUND_WAIT_S
from tests.servers import app_server, service_process
from tests.test_layers import ROOT
from tests.upstreams.common import Upstream

DEPLOY = ROOT / "deploy" / "kubernetes"
OPERATIONS = ROOT / "docs" / "operations.md"
# The oldest release the manifests are for: the first with the preStop `sleep` action on by
# default. A field only newer clusters know fails here.
KUBERNETES_VERSION = "1.30"
NAME_LABEL = "app.kubernetes.io/name"
APP_USER = 10001
# After the server's own shutdown: closing provider clients and stores, the last log lines.
STOP_MARGIN_S = 5
# The longest a pod of this image may take from exec to answering /health: imports on a
# quarter of a CPU, then the first readiness round (FIRST_ROUND_WAIT_S at most).
SLOW_START_S = 30
# Stands in for the REDIS_URL Secret where the service only parses it.
EXAMPLE_REDIS_URL = "redis://:example-password@redis:6379/0"


# -- reading the manifests --------------------------------------------------------------------

@cache
def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return data


@cache
def documents(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc)


def resources() -> list[dict[str, Any]]:
    return [doc for name in kustomization()["resources"] for doc in documents(name)]


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in resources() if doc["kind"] == kind]
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (found,) = [c for c in pod_spec()["containers"] if c["name"] == "hello-ship"]
    return found


def container_port(name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports: list[int] = [p["containerPort"] for p in container()["ports"]
                        if p["name"] == name_or_number]
    (port,) = ports
    return port


def literal_env() -> dict[str, str]:
    """The variables the Deployment sets to a value (not from a Secret)."""
    return {e["name"]: e["value"] for e in container()["env"] if "value" in e}


def mount_of(volume_kind: str, name: str) -> str:
    """Where the container mounts the volume of that ConfigMap or Secret."""
    field = {"configMap": "name", "secret": "secretName"}[volume_kind]
    (volume,) = [v["name"] for v in pod_spec()["volumes"]
                 if v.get(volume_kind, {}).get(field) == name]
    paths: list[str] = [m["mountPath"] for m in container()["volumeMounts"]
                        if m["name"] == volume]
    (path,) = paths
    return path


def keys_secret() -> str:
    names: list[str] = [v["secret"]["secretName"] for v in pod_spec()["volumes"]
                        if "secret" in v]
    (name,) = names
    return name


def config_text() -> str:
    text: str = one("ConfigMap")["data"][Path(literal_env()["HELLO_SHIP_CONFIG"]).name]
    return text


def key_files() -> list[str]:
    return list(key_file_of().values())


def key_file_of() -> dict[str, str]:
    """Each provider's key file in the example config."""
    routes = tomllib.loads(config_text())["routes"]
    return {route["provider"]: route["api_key_file"] for route in routes
            if "api_key_file" in route}


def probe(kind: str) -> dict[str, Any]:
    found: dict[str, Any] = container()[f"{kind}Probe"]
    return found


def window_s(kind: str) -> int:
    """How long that probe may keep failing before the kubelet acts on it."""
    seconds: int = probe(kind)["periodSeconds"] * probe(kind)["failureThreshold"]
    return seconds


def prestop_s() -> int:
    handler = container()["lifecycle"]["preStop"]
    if "sleep" in handler:
        return int(handler["sleep"]["seconds"])
    command = handler["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep") and len(command) == 2, command
    return int(command[1])


def service_env(tmp_path: Path, keys_dir: Path | None = None) -> dict[str, str]:
    """The Deployment's environment on this machine: the ConfigMap's file extracted, and the
    keys read from `keys_dir` instead of the Secret's mount when given."""
    text = config_text()
    if keys_dir is not None:
        mount = mount_of("secret", keys_secret())
        assert text.count(f'"{mount}/') == len(key_files()) > 0
        text = text.replace(f'"{mount}/', f'"{keys_dir}/')
    path = tmp_path / "config" / Path(literal_env()["HELLO_SHIP_CONFIG"]).name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return {**literal_env(), "HELLO_SHIP_CONFIG": str(path), "REDIS_URL": EXAMPLE_REDIS_URL}


def deployed_settings(tmp_path: Path) -> Settings:
    return Settings.from_env(service_env(tmp_path))


def uvicorn_run_under(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the image's `hello-ship serve` (with the container's args) hands uvicorn."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    monkeypatch.setattr("telemetry.jsonlog.configure_logging", lambda level: None)
    with mock.patch.dict(os.environ, env, clear=True):
        assert hello_ship(["serve", *container().get("args", [])]) == 0
    (kwargs,) = calls
    return kwargs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the manifests as the API server sees them --------------------------------------------------

def test_the_kustomization_lists_every_manifest_in_the_folder() -> None:
    on_disk = {p.name for p in DEPLOY.glob("*.y*ml")} - {"kustomization.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(on_disk)
    assert {doc["kind"] for doc in resources()} == {
        "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.yaml")
                                        if p.name != "kustomization.yaml"))
def test_every_manifest_is_valid_for_the_kubernetes_api(name: str) -> None:
    for doc in documents(name):
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    deployment = copy.deepcopy(one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_selector_finds_the_pods_by_the_standard_label() -> None:
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[NAME_LABEL] == "hello-ship"
    assert all(doc["metadata"]["labels"][NAME_LABEL] == "hello-ship" for doc in resources())
    selectors = {
        "Deployment": one("Deployment")["spec"]["selector"]["matchLabels"],
        "Service": one("Service")["spec"]["selector"],
        "PodDisruptionBudget": one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        **{f"spread {n}": c["labelSelector"]["matchLabels"]
           for n, c in enumerate(pod_spec().get("topologySpreadConstraints", []))},
    }
    assert {kind: selector.items() <= pod_labels.items() and bool(selector)
            for kind, selector in selectors.items()} == dict.fromkeys(selectors, True)


# -- ports, probes and timing -----------------------------------------------------------------

def test_the_service_port_reaches_the_port_the_server_binds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (port,) = one("Service")["spec"]["ports"]
    assert (port["name"], port["port"], one("Service")["spec"]["type"]) == ("http", 80,
                                                                           "ClusterIP")
    target = container_port(port["targetPort"])
    served = uvicorn_run_under(service_env(tmp_path), monkeypatch)
    assert served["host"] == "0.0.0.0"  # reachable from the kubelet and the Service
    assert served["port"] == target == int(literal_env()["PORT"])
    assert {container_port(probe(kind)["httpGet"]["port"])
            for kind in ("startup", "liveness", "readiness")} == {target}


def test_metrics_are_on_a_pod_port_the_service_does_not_publish(tmp_path: Path) -> None:
    settings = deployed_settings(tmp_path)
    metrics = container_port("metrics")
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert settings.metrics_port == metrics == int(annotations["prometheus.io/port"])
    assert settings.metrics_host == "0.0.0.0"  # 127.0.0.1 would refuse every other pod
    published = {container_port(p["targetPort"]) for p in one("Service")["spec"]["ports"]}
    assert metrics not in published


def test_stopping_a_pod_ends_before_the_kubelet_kills_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet counts terminationGracePeriodSeconds from the deletion: the preStop hook,
    then SIGTERM, the drain, the grace for open answers and uvicorn's own timeout after it.
    Past it comes SIGKILL, and open streams end without their error frame."""
    settings = deployed_settings(tmp_path)
    assert settings.drain_delay_s > 0 and settings.shutdown_grace_s > 0  # set, not defaults
    uvicorn_stop_s = uvicorn_run_under(service_env(tmp_path), monkeypatch)[
        "timeout_graceful_shutdown"]
    assert uvicorn_stop_s >= settings.shutdown_grace_s
    needed = prestop_s() + settings.drain_delay_s + uvicorn_stop_s + STOP_MARGIN_S
    assert pod_spec()["terminationGracePeriodSeconds"] >= needed


def test_the_readiness_probe_sees_the_drain_before_the_listener_closes(tmp_path: Path) -> None:
    """/ready turns 503 at SIGTERM, which the kubelet sends after the preStop hook, so only
    DRAIN_DELAY_S is there for the probe to notice (and the pod status to spread) before
    the listener closes; the preStop sleep does not count."""
    assert probe("readiness")["httpGet"]["path"] == "/ready"
    assert window_s("readiness") < deployed_settings(tmp_path).drain_delay_s


def test_a_slow_start_is_waited_for_and_a_hang_is_caught_after_it() -> None:
    """Liveness and readiness do not run until the startup probe has passed once."""
    assert "initialDelaySeconds" not in probe("liveness")  # the startup probe holds it off
    assert window_s("startup") >= SLOW_START_S > FIRST_ROUND_WAIT_S
    assert window_s("startup") >= window_s("liveness")
    assert probe("startup")["httpGet"]["path"] == probe("liveness")["httpGet"]["path"]


def test_a_pod_answers_its_probes_with_the_deployments_settings(
        tmp_path: Path, upstreams: tuple[Upstream, Upstream]) -> None:
    """`hello-ship serve` with the Deployment's env and ConfigMap, the keys Secret holding the
    OpenAI key only, and fake vendors: alive, ready on the route it has, and the route it lacks
    names the missing file."""
    openai, anthropic = upstreams
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / Path(key_file_of()["openai"]).name).write_text(openai.api_key + "\n")
    metrics_port = free_port()
    env = {**service_env(tmp_path, keys), "HOST": "127.0.0.1", "PORT": "0",
           "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(metrics_port),
           "DRAIN_DELAY_S": "0",  # the fixture's SIGTERM at the end need not wait
           "OPENAI_BASE_URL": openai.url + "/v1", "ANTHROPIC_BASE_URL": anthropic.url}
    del env["REDIS_URL"]
    with service_process(env) as running, httpx.Client(timeout=10) as client:
        answers = {kind: client.get(running.url + probe(kind)["httpGet"]["path"])
                   for kind in ("startup", "liveness", "readiness")}
        scraped = client.get(f"http://127.0.0.1:{metrics_port}/metrics")
        on_service_port = client.get(running.url + "/metrics")
    assert {kind: r.status_code for kind, r in answers.items()} == dict.fromkeys(answers, 200)
    routes = {r["route"]: r for r in answers["readiness"].json()["routes"]}
    assert routes["openai/gpt-4o-mini"]["usable"] is True
    missing = routes["anthropic/claude-3-5-haiku-20241022"]
    assert missing["usable"] is False
    assert str(keys / Path(key_file_of()["anthropic"]).name) in missing["problem"]
    assert scraped.status_code == 200 and "hello_ship_" in scraped.text
    assert on_service_port.status_code == 404


def test_missing_keys_take_a_pod_out_of_rotation_without_restarting_it(tmp_path: Path) -> None:
    """The Secret is empty or its files unreadable: the readiness probe fails, the liveness
    and startup probes pass, so the kubelet does not restart the pod in a loop."""
    keys = tmp_path / "keys"
    keys.mkdir()
    env = service_env(tmp_path, keys)
    for name in ("REDIS_URL", "METRICS_PORT"):
        del env[name]
    with app_server(Settings.from_env(env)) as live, httpx.Client(timeout=10) as client:
        status = {kind: client.get(live.url + probe(kind)["httpGet"]["path"])
                  for kind in ("startup", "liveness", "readiness")}
    assert status["startup"].status_code == status["liveness"].status_code == 200
    assert status["readiness"].status_code == 503
    reasons = " ".join(status["readiness"].json()["reasons"])
    assert all(str(keys / Path(path).name) in reasons for path in key_files())


# -- config and secrets -------------------------------------------------------------------------

def test_config_and_keys_are_whole_volume_mounts_the_service_reads() -> None:
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    for mount in container()["volumeMounts"]:
        if {"secret", "configMap"} & volumes[mount["name"]].keys():
            assert "subPath" not in mount, mount  # never updated when the source changes
    config = Path(literal_env()["HELLO_SHIP_CONFIG"])
    assert str(config.parent) == mount_of("configMap", one("ConfigMap")["metadata"]["name"])
    keys_mount = mount_of("secret", keys_secret())
    assert key_files() and all(str(Path(f).parent) == keys_mount for f in key_files())


def test_the_key_files_are_readable_by_the_service_user() -> None:
    """Secret files belong to root; the service reads them as uid 10001 through fsGroup."""
    (volume,) = [v["secret"] for v in pod_spec()["volumes"] if "secret" in v]
    mode = volume.get("defaultMode", 0o644)
    group = pod_spec()["securityContext"].get("fsGroup")
    assert mode & 0o004 or (mode & 0o040 and group is not None)
    assert not mode & 0o002  # nobody may replace a key


def test_redis_url_comes_from_a_secret() -> None:
    (redis,) = [e for e in container()["env"] if e["name"] == "REDIS_URL"]
    assert "value" not in redis and redis["valueFrom"]["secretKeyRef"]["key"]


def test_the_docs_create_the_secrets_the_pods_read() -> None:
    """An operator follows docs/operations.md: the Secrets and files it makes are the ones
    the Deployment mounts and the ConfigMap names."""
    text = re.sub(r"\\\n\s*", " ", OPERATIONS.read_text())
    created: dict[str, set[str]] = {}
    for name, flags in re.findall(r"kubectl create secret generic (\S+)([^\n|]*)", text):
        created.setdefault(name, set()).update(re.findall(r"--from-\w+=([\w.-]+)=", flags))
    (redis,) = [e for e in container()["env"] if e["name"] == "REDIS_URL"]
    reference = redis["valueFrom"]["secretKeyRef"]
    assert created == {keys_secret(): {Path(f).name for f in key_files()},
                       reference["name"]: {reference["key"]}}


def test_the_example_config_is_read_by_the_service(tmp_path: Path) -> None:
    settings = deployed_settings(tmp_path)
    assert [route.name for route in settings.routes] == [
        "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022"]
    assert [route.credentials and route.credentials.description
            for route in settings.routes] == [f"the file {path}" for path in key_files()]
    # Keys are configured, so binding 0.0.0.0 is allowed (open mode would refuse to start).
    assert not settings.tenancy.open_mode and settings.host == "0.0.0.0"
    assert settings.quota.redis_url == EXAMPLE_REDIS_URL
    assert settings.log_level == literal_env()["LOG_LEVEL"]
    # Rotating a key by updating the Secret relies on the watch being on.
    assert settings.config_watch_s == float(literal_env()["CONFIG_WATCH_S"]) > 0


# -- the pod's hardening and capacity ---------------------------------------------------------

def test_the_container_runs_unprivileged_on_a_read_only_root() -> None:
    pod, own = pod_spec()["securityContext"], container()["securityContext"]
    effective = {**pod, **own}  # the container's own fields win
    assert effective["runAsNonRoot"] is True and effective["runAsUser"] == APP_USER
    assert effective["seccompProfile"] == {"type": "RuntimeDefault"}
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"] and "add" not in own["capabilities"]
    assert pod_spec()["automountServiceAccountToken"] is False
    # Service links would inject e.g. METRICS_PORT=tcp://... for a Service named `metrics`.
    assert pod_spec()["enableServiceLinks"] is False
    (tmp,) = [m for m in container()["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume and not tmp.get("readOnly")
    # The image's exec-form `hello-ship serve` gets SIGTERM itself; a shell would not pass it.
    assert "command" not in container()


def quantity(text: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([\d.]+)([A-Za-z]*)", str(text))
    assert match, text
    return float(match[1]) * units.get(match[2], 1)


def test_resources_are_requested_and_memory_is_capped() -> None:
    resources = container()["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert quantity(requests["cpu"]) > 0 and quantity(requests["memory"]) >= 128 * 2**20
    assert quantity(limits["memory"]) >= quantity(requests["memory"])


def test_rollouts_and_drains_always_leave_a_pod_serving() -> None:
    spec = one("Deployment")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] >= 1  # else a rollout cannot start
    budget = one("PodDisruptionBudget")["spec"]
    if "minAvailable" in budget:
        # At least one, and fewer than the replicas, or no node could ever be drained.
        assert 1 <= budget["minAvailable"] < spec["replicas"]
    else:
        assert 1 <= budget["maxUnavailable"] < spec["replicas"]
