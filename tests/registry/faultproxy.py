"""A fault-injecting HTTP proxy on loopback, in front of a plain-HTTP registry.

Real networks drop connections in the middle of a 2 GiB upload, and real registries answer 503 or
429 under load; the push must still complete and leave nothing corrupt. This proxy forwards each
request (one per connection: it adds ``Connection: close``) and, decided by a seeded random
generator, instead:

- ``cut``: forwards part of a request body (PATCH/PUT uploads) then closes both sockets;
- ``cut_response``: forwards the whole request, then closes before relaying the response;
- ``503`` / ``429``: drains the request and answers that status itself (``Retry-After: 0``);
- ``stall``: waits ``stall_s`` before relaying the response;
- ``cut_download``: relays part of a blob ``GET`` response, then closes;
- ``corrupt``: forwards a request body (PATCH/PUT uploads) with one byte changed (a broken
  middlebox: the registry stores it and the digest check at the end refuses the blob);
- ``upload_unknown``: drains a ``PATCH``/``PUT`` on an upload session and answers 404
  ``BLOB_UPLOAD_UNKNOWN`` itself (a registry that lost the session).

``rates`` maps a fault to its probability; ``only`` limits faults to methods (default: all);
``counts`` tells the test which faults really happened.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections import Counter

_BODY_FAULTS = ("cut", "corrupt")


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        rates: dict[str, float] | None = None,
        seed: int = 1,
        stall_s: float = 0.3,
        only: tuple[str, ...] = (),
        max_faults: int | None = None,
        retry_after: str = "0",
    ) -> None:
        self.retry_after = retry_after
        self.ranges: list[tuple[str, str]] = []
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.rates = rates or {}
        self.rng = random.Random(seed)
        self.stall_s = stall_s
        self.only = only
        self.max_faults = max_faults
        self.counts: Counter[str] = Counter()
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

    def close(self) -> None:
        self._stop = True
        self._sock.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pick(self, method: str, has_body: bool, path: str = "") -> str:
        with self._lock:
            if self.only and method not in self.only:
                return ""
            if self.max_faults is not None and sum(self.counts.values()) >= self.max_faults:
                return ""
            for fault, p in self.rates.items():
                if fault in _BODY_FAULTS and not has_body:
                    continue
                if fault == "cut_download" and not (method == "GET" and "/blobs/sha256:" in path):
                    continue
                if fault == "upload_unknown" and not (
                    method in ("PATCH", "PUT") and "/blobs/uploads/" in path
                ):
                    continue
                if self.rng.random() < p:
                    self.counts[fault] += 1
                    return fault
            return ""

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        up = None
        try:
            f = client.makefile("rb")
            if f.peek(1)[:1] == b"\x16":
                return  # a TLS handshake: this proxy speaks plain HTTP only
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = f.readline()
                if not line:
                    return
                head += line
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = [ln for ln in lines[1:] if ln]
            length = 0
            for h in headers:
                if h.lower().startswith("content-length:"):
                    length = int(h.split(":", 1)[1])
            with self._lock:
                self.requests.append((method, path))
                if any(h.lower().startswith("range:") for h in headers):
                    self.ranges.append((f"{method}-range", path))
            fault = self._pick(method, length > 0, path)
            if fault in ("503", "429", "upload_unknown"):
                left = length
                while left:
                    left -= len(f.read(min(left, 1 << 16)))
                body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
                status = "503 Service Unavailable" if fault == "503" else "429 Too Many Requests"
                if fault == "upload_unknown":
                    body = b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"injected"}]}'
                    status = "404 Not Found"
                client.sendall(
                    f"HTTP/1.1 {status}\r\nRetry-After: {self.retry_after}\r\nContent-Length: {len(body)}\r\n"
                    "Content-Type: application/json\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                return
            up = socket.create_connection(self.upstream)
            kept = [h for h in headers if not h.lower().startswith("connection:")]
            up.sendall(
                (lines[0] + "\r\n" + "\r\n".join(kept) + "\r\nConnection: close\r\n\r\n").encode(
                    "latin-1"
                )
            )
            left = length
            cut_at = self.rng.randint(1, length) if fault == "cut" and length else -1
            flip_at = self.rng.randrange(length) if fault == "corrupt" and length else -1
            sent = 0
            while left:
                data = f.read(min(left, 1 << 16))
                if not data:
                    return
                if 0 <= flip_at - sent < len(data):
                    i = flip_at - sent
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
                if cut_at >= 0 and sent + len(data) >= cut_at:
                    up.sendall(data[: cut_at - sent])
                    return  # both sockets close in finally: a connection cut mid-upload
                up.sendall(data)
                sent += len(data)
                left -= len(data)
            if fault == "cut_response":
                time.sleep(0.05)
                return
            if fault == "stall":
                time.sleep(self.stall_s)
            relayed = 0
            while True:
                data = up.recv(1 << 16)
                if not data:
                    break
                client.sendall(data)
                relayed += len(data)
                if fault == "cut_download" and relayed > (256 << 10):
                    return
        except OSError:
            pass
        finally:
            for s in (up, client):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
