"""What the browser tests put around the service: a proxy they can cut, and a server that
notes whether anything reached it. Both on 127.0.0.1, each on a free port, in threads."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CuttableProxy:
    """Forwards TCP connections to `target`; `cut()` drops every open one at once, as a
    network blip or a load balancer's restart does, and keeps accepting new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        # One side ended or was cut: end both, so neither waits on a half-open pair.
        for sock in (source, sink):
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> int:
        """Drop every connection open now; says how many sockets that was."""
        with self._lock:
            victims = list(self._open)
        for sock in victims:
            self._drop(sock)
        return len(victims)

    def close(self) -> None:
        self._listener.close()
        self.cut()


@contextmanager
def cuttable_proxy(url: str) -> Iterator[CuttableProxy]:
    host, _, port = url.removeprefix("http://").partition(":")
    proxy = CuttableProxy((host, int(port)))
    try:
        yield proxy
    finally:
        proxy.close()


class RecordingServer:
    """An HTTP server that answers 404 to everything and keeps the paths it was asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                self.send_error(404)

            def log_message(self, format: str, *args: object) -> None:
                return None  # quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def recording_server() -> Iterator[RecordingServer]:
    with closing(RecordingServer()) as server:
        yield server
