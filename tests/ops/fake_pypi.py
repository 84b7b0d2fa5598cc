"""A fake pypi.org on loopback, for the PyPI JSON API's per-release route
`/pypi/<name>/<version>/json` only, reached the way a client behind an HTTPS proxy reaches
the real one: through CONNECT, then TLS with a certificate for pypi.org that a throwaway CA
signs. A client given `HTTPS_PROXY` and `REQUESTS_CA_BUNDLE` (requests honours both) talks to
it unchanged; one that bypassed the proxy would meet the real pypi.org and fail to verify it.

The certificates come from the `openssl` program (Debian's openssl package). Missing, the
tests skip on a developer machine and fail under CI=true.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.programs import required_tool

_RELEASE = re.compile(r"^/pypi/([^/]+)/([^/]+)/json$")


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def certificates(directory: Path) -> Certificates:
    """A CA that signs nothing but a one-day certificate for pypi.org."""
    openssl = required_tool("openssl")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, request = directory / "pypi.pem", directory / "pypi.key", directory / "pypi.csr"
    extensions = directory / "pypi.ext"
    # With the key identifiers, so that strict X.509 verification (what Python 3.13's
    # ssl.create_default_context asks for) accepts the chain too.
    extensions.write_text("basicConstraints=critical,CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\n"
                          "extendedKeyUsage=serverAuth\n"
                          "subjectAltName=DNS:pypi.org\n"
                          "subjectKeyIdentifier=hash\n"
                          "authorityKeyIdentifier=keyid\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1",
         "-subj", "/CN=hello-ship test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign"],
        ["req", "-new", *ec, "-keyout", key, "-out", request, "-subj", "/CN=pypi.org"],
        ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-set_serial", "1",
         "-days", "1", "-extfile", extensions, "-out", cert],
    ):
        subprocess.run([openssl, *map(str, command)], capture_output=True, timeout=60,
                       check=True)
    return Certificates(ca=ca, cert=cert, key=key)


def vulnerability(vuln_id: str, aliases: list[str], fixed_in: list[str]) -> dict[str, Any]:
    """One entry of a release's `vulnerabilities`, as PyPI serves it from OSV."""
    return {"aliases": aliases, "details": f"Details of {vuln_id}.", "fixed_in": fixed_in,
            "id": vuln_id, "link": f"https://osv.dev/vulnerability/{vuln_id}", "source": "osv",
            "summary": f"Summary of {vuln_id}", "withdrawn": None}


def release(name: str, version: str, vulnerabilities: list[dict[str, Any]]) -> dict[str, Any]:
    """The document `/pypi/<name>/<version>/json` answers with (no `releases` key: PyPI
    dropped it from the per-release route)."""
    wheel = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    return {
        "info": {"name": name, "version": version, "summary": f"The {name} package",
                 "requires_python": ">=3.8", "yanked": False, "yanked_reason": None,
                 "package_url": f"https://pypi.org/project/{name}/",
                 "release_url": f"https://pypi.org/project/{name}/{version}/"},
        "last_serial": 1,
        "urls": [{"filename": wheel, "packagetype": "bdist_wheel", "python_version": "py3",
                  "digests": {"sha256": "0" * 64}, "yanked": False,
                  "url": f"https://files.pythonhosted.org/packages/{wheel}"}],
        "vulnerabilities": vulnerabilities,
    }


@dataclass
class FakePyPI:
    proxy: str
    ca: Path
    # (canonical name, version) -> the release document; any other release is a 404.
    releases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)


@contextmanager
def fake_pypi(certs: Certificates) -> Iterator[FakePyPI]:
    """The fake, behind an HTTPS proxy on a free 127.0.0.1 port; stopped on leaving."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs.cert, certs.key)
    fake = FakePyPI(proxy="", ca=certs.ca)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # a client that stops talking must not keep the fake from stopping
        tunnelled = False

        def do_CONNECT(self) -> None:
            if self.path != "pypi.org:443":
                self.send_error(403)
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.connection = tls.wrap_socket(self.connection, server_side=True)
            self.rfile = self.connection.makefile("rb")
            self.wfile = self.connection.makefile("wb")
            self.tunnelled = True
            # urllib3 asks in HTTP/1.0, which would otherwise end the connection here.
            self.close_connection = False

        def do_GET(self) -> None:
            match = _RELEASE.match(self.path)
            document = (fake.releases.get((match[1], match[2]))
                        if self.tunnelled and match else None)
            fake.asked.append(self.path)
            body = json.dumps(document or {"message": "Not Found"}).encode()
            self.send_response(200 if document else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if document:
                # PyPI's own caching: what makes a cache shared between runs answer instead.
                self.send_header("Cache-Control", "max-age=900, public")
            self.end_headers()
            self.wfile.write(body)

        def finish(self) -> None:
            super().finish()
            self.connection.close()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # Joined on close, so no request is still being answered once the fake is gone.
    server.daemon_threads = False
    fake.proxy = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-pypi",
                              kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
