"""A real nginx running the shipped `nginx/hello-ship.conf` in front of the service, on a free
loopback port, always stopped afterwards.

`make test` installs nginx (Debian's package) when it is missing. Without it these tests skip
on a developer machine and fail under CI=true, where a skip would hide that they never ran.

The shipped file is an http-level include; it runs here inside a minimal main config (no
daemon, its files under the test's directory) with only its `listen`, upstream `server` and
`access_log` lines replaced. A test may run a variant of it (`edit`) to show what a setting is
for, each change made with `replace_once` so that it fails loudly once the shipped file no
longer holds what it changes.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson

from tests.programs import required_tool, stop

SHIPPED = Path(__file__).resolve().parents[1] / "nginx" / "hello-ship.conf"

# A client elsewhere is simulated by a request naming its address in CLIENT_ADDRESS: nginx then
# takes that as the connection's peer ($remote_addr), exactly as if the client had connected
# from there, and the shipped file forwards for it as for any client (the realip module,
# trusting only loopback: no one else can connect in a test).
CLIENT_ADDRESS = "X-Test-Client-Address"

MAIN = """
daemon off;
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    set_real_ip_from 127.0.0.1;
    real_ip_header {client_address};
{http}
    include {site};
}}
"""


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    url: str
    access_log: Path

    def access_records(self) -> list[dict[str, Any]]:
        """The shipped access log's lines so far (nginx writes each as its request ends)."""
        if not self.access_log.exists():
            return []
        return [orjson.loads(line) for line in self.access_log.read_bytes().splitlines()]

    def wait_for_access(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.access_records():
                if record["request_id"] == request_id:
                    return record
            time.sleep(0.02)
        raise AssertionError(f"nginx logged no request {request_id!r} within {timeout}s")


def replace_once(text: str, pattern: str, replacement: str) -> str:
    """`text` with the one match of the regex `pattern` replaced."""
    new, count = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(f"{pattern!r} matches {count} times in {SHIPPED.name}, not once")
    return new


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_config(text: str, port: int, upstream: str, access_log: Path) -> str:
    """The shipped file listening on 127.0.0.1:`port` for the service at `upstream`."""
    text = replace_once(text, r"^(\s*)listen\s+[^;]+;", rf"    listen 127.0.0.1:{port};")
    text = replace_once(text, r"^(\s*)server\s+[^\s;{]+;", f"    server {upstream};")
    return replace_once(text, r"^(\s*)access_log\s+\S+\s+hello_ship;",
                        f"    access_log {access_log} hello_ship;")


@contextmanager
def nginx_proxy(upstream_url: str, workdir: Path, *, edit: Callable[[str], str] | None = None,
                http: str = "") -> Iterator[Nginx]:
    """nginx on 127.0.0.1 running the shipped config for the service at `upstream_url`;
    `edit` changes the shipped text first, `http` adds directives to the http block around it
    (an operator's own nginx.conf)."""
    binary = required_tool("nginx")
    port = free_port()
    upstream = urlparse(upstream_url)
    access_log = workdir / "access.log"
    shipped = SHIPPED.read_text()
    site = workdir / "hello-ship.conf"
    site.write_text(site_config(edit(shipped) if edit else shipped, port,
                                f"{upstream.hostname}:{upstream.port}", access_log))
    config = workdir / "nginx.conf"
    # Started as root (a container), the workers would run as nobody, who may not enter the
    # test's private directory to buffer a request body there.
    user = "user root;" if os.geteuid() == 0 else ""
    config.write_text(MAIN.format(user=user, prefix=workdir, client_address=CLIENT_ADDRESS,
                                  http=http, site=site))
    proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    stderr = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"nginx did not start: {stderr}") from None
                time.sleep(0.02)
        yield Nginx(proc, f"http://127.0.0.1:{port}", access_log)
    finally:
        stop(proc)
