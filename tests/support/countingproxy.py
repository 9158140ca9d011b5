"""A byte-counting HTTP proxy on loopback, both ways round:

- a *forward* proxy (``HTTP_PROXY`` / ``HTTPS_PROXY``): ``CONNECT host:port`` tunnels and
  absolute-URI ``GET http://host/...`` requests, the bytes each host sends counted
  (``received[host]``), so a test can say "no wheel and no .deb came from the network";
- a *reverse* proxy in front of one upstream (``upstream="127.0.0.1:PORT"``, e.g. a test
  registry): every request forwarded there (one per connection, ``Connection: close``), the
  request bodies counted (``sent``, chunk framing included), so a test can say how many bytes a push uploaded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter


class CountingProxy:
    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = None
        if upstream:
            host, _, port = upstream.rpartition(":")
            self.upstream = (host, int(port))
        self.received: Counter[str] = Counter()  # forward: bytes each host sent back
        self.sent = 0  # reverse: request body bytes forwarded upstream
        self.bodies: Counter[tuple[str, str]] = Counter()  # ... per request
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def close(self) -> None:
        self._stop = True
        self._sock.close()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _count(self, host: str, n: int) -> None:
        with self._lock:
            self.received[host] += n

    def _pipe(self, src: socket.socket, dst: socket.socket, host: str | None) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
                if host is not None:
                    self._count(host, len(data))
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _body(self, f, up: socket.socket, count: bool, request: tuple[str, str]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while data := f.read1(1 << 16):
                up.sendall(data)
                if count:
                    with self._lock:
                        self.sent += len(data)
                        self.bodies[request] += len(data)

    def _serve(self, client: socket.socket) -> None:
        up = None
        try:
            f = client.makefile("rb")
            if f.peek(1)[:1] == b"\x16":
                return  # a TLS handshake (a client trying https first): plain HTTP only here
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = f.readline()
                if not line:
                    return
                head += line
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = [
                ln
                for ln in lines[1:]
                if ln and not ln.lower().startswith(("connection:", "proxy-"))
            ]
            with self._lock:
                self.requests.append((method, target))
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up = socket.create_connection((host, int(port)), timeout=60)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                buffered = f.peek(0) if hasattr(f, "peek") else b""
                if buffered:
                    up.sendall(f.read(len(buffered)))
                t = threading.Thread(target=self._pipe, args=(client, up, None), daemon=True)
                t.start()
                self._pipe(up, client, host)
                t.join(timeout=60)
                return
            if target.startswith("http://"):  # forward, plain HTTP
                rest = target[len("http://") :]
                hostport, _, path = rest.partition("/")
                host, _, port = hostport.partition(":")
                up = socket.create_connection((host, int(port or 80)), timeout=60)
                counted: str | None = host
                first = f"{method} /{path} {version}"
            elif self.upstream is not None:  # reverse, to the one upstream
                up = socket.create_connection(self.upstream, timeout=60)
                counted = None
                first = lines[0]
            else:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            up.sendall(
                (first + "\r\n" + "\r\n".join(headers) + "\r\nConnection: close\r\n\r\n").encode(
                    "latin-1"
                )
            )
            # the body, whatever its framing (Content-Length or chunked), as the client sends it
            threading.Thread(
                target=self._body, args=(f, up, counted is None, (method, target)), daemon=True
            ).start()
            self._pipe(up, client, counted)
        except OSError:
            pass
        finally:
            for s in (up, client):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
