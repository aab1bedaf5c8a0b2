"""The threaded HTTP plumbing FakePretix and FakeSlack share: a local server and its handler.

Each fake subclasses both: its handler routes the HTTP methods to the fake, and its server
keeps a reference to the fake.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class LocalHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, reading whole requests and writing whole answers."""

    protocol_version = "HTTP/1.1"

    def read_parts(self) -> tuple[str, str, str, dict[str, str], bytes]:
        """The request's method, path, query string, headers (names lower-cased) and body."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        return self.command, parts.path, parts.query, headers, body

    def write_response(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        content_length: bool = True,
    ) -> None:
        """Write the status line, a Date, these headers, Content-Length (if asked) and body."""
        phrase = HTTPStatus(status).phrase
        lines = [f"HTTP/1.1 {status} {phrase}", f"Date: {formatdate(usegmt=True)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if content_length:
            lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        # One write: headers and body in one segment avoid Nagle/delayed-ACK stalls.
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log; the fakes record every request themselves."""


class LocalServer(ThreadingHTTPServer):
    """A threaded HTTP server on a free port of 127.0.0.1 that can close its connections."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._serving: threading.Thread | None = None
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        """The server's root, e.g. http://127.0.0.1:54321."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve_in_background(self, name: str) -> None:
        """Serve from a daemon thread of this name."""
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self._serving = threading.Thread(
            target=self.serve_forever, args=(0.02,), name=name, daemon=True
        )
        self._serving.start()

    def stop(self) -> None:
        """After serve_in_background: stop serving, wake idle connections, close the socket."""
        self.shutdown()  # waits for serve_forever to return
        self.close_connections()
        self.server_close()
        if self._serving is not None:
            self._serving.join(timeout=5)
            self._serving = None

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can take seconds; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they finish."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) before the answer was written is normal here.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)
