"""Hostile clients against a real server process, over raw sockets on loopback.

Slow ("slowloris") and idle connections must not hold the threads that answer
requests: health probes are answered within a second while 4 x threads x workers
of them are open, and a request that does not arrive in full within its deadline
is answered 408 and dropped. Also the request framing done before the app sees
a request: body limits (declared and chunked), Expect: 100-continue, pipelining,
and ambiguous framing refused. Every loop is bounded by count and by time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import pytest
import requests
import runtime_models as models
from ociforge_runtime import worker

THREADS = 2
WORKERS = 1
SLOW = 4 * THREADS * WORKERS


def connect(server, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


_PENDING: dict[int, bytes] = {}  # bytes read past a response (pipelined answers), by socket


def read_response(sock: socket.socket, limit_s: float = 10.0) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response (status, lower-case headers, body); skips 1xx answers."""
    deadline = time.monotonic() + limit_s
    buf = _PENDING.pop(id(sock), b"")

    def more() -> bytes:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        return chunk

    while True:
        while b"\r\n\r\n" not in buf:
            buf += more()
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        if 100 <= status < 200:
            continue
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            buf += more()
        if buf[length:]:
            _PENDING[id(sock)] = buf[length:]
        return status, headers, buf[:length]


def closed_by_server(sock: socket.socket, within_s: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``within_s`` seconds; what it sent first."""
    deadline = time.monotonic() + within_s
    got = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False, got
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def post_bytes(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def probe(server, samples: int = 6, spacing_s: float = 0.3) -> list[float]:
    """Seconds each of a few /v2/health/live probes took (fresh connection each, 1 s limit)."""
    took = []
    for _ in range(samples):
        start = time.monotonic()
        try:
            r = requests.get(server.url + "/v2/health/live", timeout=1.0)
            ok = r.status_code == 200
        except requests.RequestException:
            ok = False
        took.append(time.monotonic() - start if ok else float("inf"))
        time.sleep(spacing_s)
    return took


@pytest.fixture
def slow_env():
    return {
        "OCIFORGE_THREADS": str(THREADS),
        "OCIFORGE_WORKERS": str(WORKERS),
        "OCIFORGE_HEADER_TIMEOUT": "3",
        "OCIFORGE_READ_TIMEOUT": "4",
        "OCIFORGE_KEEPALIVE": "30",
    }


def test_slow_and_idle_connections_do_not_stop_health_probes_and_are_dropped(
    start_server, slow_env
):
    server = start_server(models.echo, env=slow_env)
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        # SLOW slowloris connections (a header byte every 0.5 s), SLOW idle fresh
        # connections, SLOW kept-alive connections idle after one request, and SLOW
        # connections sending their body a byte every 0.5 s.
        slowloris = [connect(server) for _ in range(SLOW)]
        for s in slowloris:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n")
        idle = [connect(server) for _ in range(SLOW)]
        kept = [connect(server) for _ in range(SLOW)]
        for s in kept:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s)[0] == 200
        slow_body = [connect(server) for _ in range(SLOW)]
        for s in slow_body:
            s.sendall(
                b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n"
            )
        socks = slowloris + idle + kept + slow_body
        opened = time.monotonic()
        # not dropped before the deadline: every connection is still open and unanswered now
        for s in socks:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1, socket.MSG_PEEK)
            s.setblocking(True)

        def trickle() -> None:
            for _ in range(40):  # at most 20 s
                if stop.wait(0.5):
                    return
                for s in slowloris:
                    with contextlib.suppress(OSError):
                        s.send(b"X")
                for s in slow_body:
                    with contextlib.suppress(OSError):
                        s.send(b"1")

        driver = threading.Thread(target=trickle, daemon=True)
        driver.start()
        took = probe(server, samples=6, spacing_s=0.3)
        assert max(took) < 1.0, f"health probes took {took} with {len(socks)} slow/idle sockets"

        # the slowloris connections are answered 408 and closed at the header deadline (3 s),
        # the slow bodies at the request deadline (4 s); the kept-alive ones stay open (30 s)
        for s in slowloris:
            closed, got = closed_by_server(s, within_s=opened + 6.0 - time.monotonic())
            assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]
            assert b"OCIFORGE_HEADER_TIMEOUT" in got
        for s in slow_body:
            closed, got = closed_by_server(s, within_s=opened + 7.0 - time.monotonic())
            assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]
            assert b"OCIFORGE_READ_TIMEOUT" in got
        for s in idle:  # a fresh connection that never sends: closed at the header deadline
            closed, got = closed_by_server(s, within_s=opened + 6.0 - time.monotonic())
            assert closed and got == b""
        for s in kept:  # still usable
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s)[0] == 200
        rejected = [r for r in server.log_records() if r.get("event") == "request_rejected"]
        assert {r["status"] for r in rejected} == {408} and len(rejected) == 2 * SLOW
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_connection_cap_closes_the_oldest_idle_connection(start_server, slow_env):
    server = start_server(models.echo, env={**slow_env, "OCIFORGE_MAX_CONNECTIONS": "4"})
    socks = [connect(server) for _ in range(12)]
    try:
        time.sleep(0.3)
        took = probe(server, samples=3, spacing_s=0.1)
        assert max(took) < 1.0, took
        closed = [closed_by_server(s, within_s=0.05)[0] for s in socks]
        assert all(closed[:9]), closed  # the 9 oldest made room for 9 newer (3 + 3 probes)
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def small(module_server):
    return module_server(
        "small",
        models.echo,
        env={"OCIFORGE_MAX_REQUEST_BYTES": "1024", "OCIFORGE_THREADS": "2"},
    )


def chunked(body: bytes, size: int = 100) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def test_chunked_body_over_the_limit_is_413_not_truncated(small):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    with connect(small) as s:
        s.sendall(head + chunked(b"x" * 2000))
        status, headers, body = read_response(s)
    assert status == 413, body
    assert json.loads(body) == {
        "error": "request body is larger than 1024 bytes (OCIFORGE_MAX_REQUEST_BYTES)"
    }
    with connect(small) as s:  # within the limit: the model sees the whole body
        s.sendall(head + chunked(b"y" * 1000, size=7))
        status, _, body = read_response(s)
    assert status == 200 and json.loads(body)["prediction"]["len"] == 1000


def test_declared_body_over_the_limit_is_413_before_it_is_sent(small):
    with connect(small) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000000\r\n\r\n"
        )
        status, headers, body = read_response(s, limit_s=3)
    assert status == 413 and "OCIFORGE_MAX_REQUEST_BYTES" in json.loads(body)["error"]
    assert headers["connection"] == "close"


def test_expect_continue_and_pipelined_requests(small):
    with connect(small) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 7\r\n\r\n"
        )
        s.settimeout(3)
        assert s.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b'{"a":1}')
        status, _, body = read_response(s)
        assert status == 200 and json.loads(body)["prediction"]["keys"] == ["a"]
        # three requests in one write: three answers, in order
        s.sendall(
            post_bytes("/predict", b'"one"')
            + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
            + post_bytes("/predict", b'"three"')
        )
        answers = [read_response(s) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert json.loads(answers[0][2])["prediction"]["value"] == "one"
    assert json.loads(answers[1][2]) == {"live": True}
    assert json.loads(answers[2][2])["prediction"]["value"] == "three"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", 400),
        ("Content-Length: 3\r\nContent-Length: 4\r\n", 400),
        ("Content-Length: +3\r\n", 400),
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        ("X-Folded: a\r\n  b\r\nContent-Length: 3\r\n", 400),
        ("X-Bare: a\nContent-Length: 3\r\n", 400),
    ],
)
def test_ambiguous_framing_is_refused(small, headers, status):
    with connect(small) as s:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: t\r\n{headers}\r\nabc".encode())
        got, hdrs, body = read_response(s, limit_s=3)
        assert got == status, body
        assert hdrs["connection"] == "close"
        assert closed_by_server(s, within_s=3)[0]


def test_bodies_wait_for_memory_beyond_the_buffer_cap_without_timing_out(start_server):
    env = {
        "OCIFORGE_MAX_REQUEST_BYTES": str(1 << 20),
        "OCIFORGE_MAX_BUFFERED_BYTES": str(1 << 20),
        "OCIFORGE_READ_TIMEOUT": "3",
        "OCIFORGE_WORKERS": "1",
    }
    server = start_server(models.echo, env=env)
    body = b"z" * ((1 << 20) - 100)
    head = (
        "POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    stalled = [connect(server) for _ in range(2)]
    try:
        for s in stalled:  # most of a body, then nothing: 1.8 MiB held, over the 1 MiB cap
            s.sendall(head + body[:-1000])
        time.sleep(0.5)
        # a small request is never held back by the cap
        assert requests.post(server.url + "/predict", json={"a": 1}, timeout=2).status_code == 200
        start = time.monotonic()
        with connect(server) as s:
            s.sendall(head + body)  # waits (paused, its deadline too) until memory is freed
            status, _, answer = read_response(s, limit_s=15)
        waited = time.monotonic() - start
        assert status == 200 and json.loads(answer)["prediction"]["len"] == len(body)
        assert waited > 1.5, waited  # it did wait for the stalled ones' 408
        for s in stalled:
            closed, got = closed_by_server(s, within_s=5)
            assert got.startswith(b"HTTP/1.1 408")
    finally:
        for s in stalled:
            s.close()


def test_large_bodies_arrive_whole(module_server):
    server = module_server("echo-large", models.echo)
    body = os.urandom(24 << 20)
    for headers, data in [
        ({"Content-Type": "application/octet-stream"}, body),
        (  # chunked: requests sends a generator's items as chunks
            {"Content-Type": "application/octet-stream"},
            (body[i : i + 1_000_000] for i in range(0, len(body), 1_000_000)),
        ),
    ]:
        r = requests.post(server.url + "/predict", data=data, headers=headers, timeout=60)
        assert r.status_code == 200, r.text[:300]
        assert r.json()["prediction"] == {"type": "bytes", "len": len(body), "head": body[:8].hex()}


def test_the_request_is_handed_to_gunicorns_parser_in_pieces_and_released():
    """One 30 MiB piece would make gunicorn's reader copy the rest of it on every 64 KiB
    read (quadratic); the pieces free the request as the app reads it."""
    data = bytearray(os.urandom(300_000))
    original = bytes(data)
    got = list(worker.pieces(data))
    assert all(len(p) <= worker.PIECE_BYTES for p in got)
    assert b"".join(got) == original and len(data) == 0
    assert b"".join(worker.pieces(original)) == original  # bytes (a rewritten head) too
