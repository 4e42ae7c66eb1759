"""Real HTTP(S) servers on 127.0.0.1 that answer what a test scripts: redirects, huge or cut
bodies, malformed JSON, and they record every request with its headers.

Used by the tests of the kit's HTTP policy (credentials and redirects) and of what a registry or
a server sends (data, never syntax). HTTPS servers use a certificate for IP 127.0.0.1 from a
CA made by ``llmkit pki``; the client trusts that CA through ``SSL_CERT_FILE``
(:func:`trust`). Nothing here talks to anything but 127.0.0.1; :func:`no_egress` makes a test
fail if the code under test tries to connect anywhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmkit import pki


@dataclass
class Answer:
    """One scripted answer. ``stream`` writes the body itself (huge, endless, or cut short)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    ranges: bool = False  # serve Range requests of ``body`` (a blob)
    stream: Callable[[BaseHTTPRequestHandler], None] | None = None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def authorization(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "authorization"), None)


@dataclass
class Server:
    url: str = ""
    routes: dict[str, Answer | Callable[[Seen], Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    put: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_to(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix)]


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, method: str) -> None:
            seen = Seen(method, self.path, dict(self.headers.items()))
            if method == "PUT":
                length = int(self.headers.get("Content-Length") or 0)
                with state.lock:
                    state.put[self.path.split("?")[0]] = self.rfile.read(length)
            with state.lock:
                state.seen.append(seen)
            route = state.routes.get(self.path.split("?")[0])
            answer = route(seen) if callable(route) else route
            if answer is None:
                answer = Answer(201 if method == "PUT" else 404)
            if answer.stream is not None:
                answer.stream(self)
                return
            body, status = answer.body, answer.status
            headers = dict(answer.headers)
            rng = self.headers.get("Range")
            if answer.ranges and rng and status == 200:
                a, _, b = rng.removeprefix("bytes=").partition("-")
                start, end = int(a), min(int(b) + 1 if b else len(body), len(body))
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
                body, status = body[start:end], 206
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_HEAD(self) -> None:
            self._answer("HEAD")

        def do_PUT(self) -> None:
            self._answer("PUT")

        def do_POST(self) -> None:
            self._answer("POST")

    return Handler


@contextlib.contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    state = Server()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: ssl.SSLContext


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate for IP 127.0.0.1 (``llmkit pki``)."""
    pki.init_ca(directory)
    issued = pki.issue(directory, "localhost-server", server=True, client=False, sans=["IP:127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_path, issued.key_path)
    return Pki(directory / pki.CA_CERT, context)


def trust(monkeypatch: pytest.MonkeyPatch, ca: Path) -> None:
    """Make urllib's default TLS context trust ``ca`` (and only it)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@dataclass
class Egress:
    attempts: list[tuple[str, int]] = field(default_factory=list)


def no_egress(monkeypatch: pytest.MonkeyPatch) -> Egress:
    """Connections to anything but 127.0.0.0/8 are refused and recorded, never made."""
    real = socket.create_connection
    egress = Egress()

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host = str(address[0])
        if not host.startswith("127."):
            egress.attempts.append((host, int(address[1])))
            raise ConnectionRefusedError(f"test guard: no connection to {host} (only 127.0.0.0/8)")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return egress


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> str:
    return "sha256:" + sha256(data)
