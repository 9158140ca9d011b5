"""Small loopback HTTP(S) servers for behaviours a real registry does not produce.

A real registry never redirects its clients to plain HTTP, never sends a body without end, and a
real token service does not bounce a refresh token to another port; a hostile or broken server
(or one in the middle) can. These servers play that part in tests, on 127.0.0.1 only.

``Server(route, tls=ca)`` answers each request with ``route(req)`` → ``Reply`` and records every
request (``server.seen``: scheme, method, path, headers, body). With ``dual=True`` one port speaks
both TLS and plain HTTP (told apart by the first byte), so ``https://127.0.0.1:P`` and
``http://127.0.0.1:P`` are the same host and port and differ only in scheme.

``endless(chunk, limit_s)`` is a body that never ends (until the client goes away, or ``limit_s``
passes, so a test can never hang on it).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    scheme: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""


def endless(chunk: int = 1 << 16, limit_s: float = 30.0) -> Iterable[bytes]:
    block = b"x" * chunk
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        yield block


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    ctx: ssl.SSLContext | None = None
    dual = False

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ctx is None:
            return sock, addr
        if self.dual:
            sock.settimeout(5)
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b""
            sock.settimeout(None)
            if first != b"\x16":
                return sock, addr  # plain HTTP on the same port
        try:
            return self.ctx.wrap_socket(sock, server_side=True), addr
        except (ssl.SSLError, OSError):
            sock.close()
            raise OSError("TLS handshake failed") from None


class Server:
    """``route(Seen) -> Reply`` on 127.0.0.1 (plain, TLS with a test CA's certificate, or both)."""

    def __init__(self, route: Callable[[Seen], Reply], *, tls=None, dual: bool = False) -> None:
        self.route = route
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
                req = Seen(scheme, self.command, self.path, dict(self.headers.items()), body)
                server.seen.append(req)
                reply = server.route(req)
                self.send_response(reply.status)
                headers = dict(reply.headers)
                streamed = not isinstance(reply.body, bytes | bytearray)
                if not streamed:
                    headers.setdefault("Content-Length", str(len(reply.body)))
                if streamed or "Content-Length" not in headers:
                    headers["Connection"] = "close"
                    self.close_connection = True
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command == "HEAD":
                    return
                with contextlib.suppress(OSError):
                    if streamed:
                        for block in reply.body:
                            self.wfile.write(block)
                    else:
                        self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_HEAD = do_DELETE = _any

        self._httpd = _HTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            cert, key = tls.issue(f"hostile-{id(self)}")
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            self._httpd.ctx = ctx
            self._httpd.dual = dual
        self.port = self._httpd.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
