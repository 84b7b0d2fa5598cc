"""A real nginx in front of the service, on a free loopback port, always stopped afterwards.

`make test` installs nginx (Debian's package) when it is missing. Without it these tests skip
on a developer machine and fail under CI=true, where a skip would hide that they never ran.
The proxy is configured as the docs tell operators to run it for streams: HTTP/1.1 to the
service, buffering off, the client's address passed on in `X-Forwarded-For` and `X-Real-IP`.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tests.programs import required_tool, stop

CONFIG = """
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream hello_ship {{ server {upstream}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hello_ship;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_buffering off;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    url: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def nginx_proxy(upstream_url: str, workdir: Path) -> Iterator[Nginx]:
    """nginx on 127.0.0.1 passing every request to the service at `upstream_url`."""
    binary = required_tool("nginx")
    port = _free_port()
    upstream = urlparse(upstream_url)
    config = workdir / "nginx.conf"
    config.write_text(CONFIG.format(prefix=workdir, port=port,
                                    upstream=f"{upstream.hostname}:{upstream.port}"))
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
        yield Nginx(proc, f"http://127.0.0.1:{port}")
    finally:
        stop(proc)
