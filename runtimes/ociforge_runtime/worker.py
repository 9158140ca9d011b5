"""The gunicorn worker: an event loop reads whole requests, threads run the app.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as a byte
arrives, and the thread then reads headers and body with no deadline: a few
slow ("slowloris") or idle clients hold every thread, and liveness probes wait
behind them until the pod is restarted.  Here one selector loop per worker
process reads every connection without blocking, and a request reaches a thread
only once it has arrived in full:

* the headers within ``OCIFORGE_HEADER_TIMEOUT`` and the whole request (headers
  and body: ``Content-Length`` or chunked) within ``OCIFORGE_READ_TIMEOUT`` of its
  first byte; a fresh connection must send its headers within the header
  timeout, a kept-alive one its next request within ``OCIFORGE_KEEPALIVE``.
  Late requests are answered 408 and dropped;
* bodies over ``OCIFORGE_MAX_REQUEST_BYTES`` (declared or, chunked, received) are
  answered 413 before they are buffered;
* request bytes held by a worker (being received, queued or being answered) are
  capped by ``OCIFORGE_MAX_BUFFERED_BYTES``: beyond it, bodies other than the
  oldest one wait (their deadline paused) for memory to be released;
* at ``OCIFORGE_MAX_CONNECTIONS`` open connections a new one closes the oldest
  idle (else the oldest still-arriving) connection, so a flood of slow
  connections cannot keep new ones (probes) out.

The loop only frames requests (finds where each one ends); the complete bytes
are then parsed by gunicorn's own parser and answered by gunicorn's response
writer on a thread, exactly as ``gthread`` does, so HTTP semantics (keep-alive,
HTTP/1.0, chunked responses, header checks) are gunicorn's.  The framing is
strict (no bare CR/LF, no folded headers, one Content-Length, no Content-Length
with Transfer-Encoding, only ``chunked``), and each request is parsed from its
own slice of bytes, so the two parsers can never disagree on where a request
ends.  Only the public parts of gunicorn that have not changed since 22.0 are
used (``Worker``, ``RequestParser``, ``wsgi.create``).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import json
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

from gunicorn.http import wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.http.parser import RequestParser
from gunicorn.workers import base

from . import logs
from .config import Settings

MAX_HEAD_BYTES = 64 * 1024  # request line + headers (gunicorn: 8190 per line)
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions
MAX_TRAILER_BYTES = 16 * 1024
MAX_CHUNKS = 100_000  # framing is parsed in Python on the loop: bound the work per request
CHUNK_OVERHEAD = 1024 * 1024  # chunked framing bytes allowed on top of the body limit
SMALL_BODY = 64 * 1024  # read even over the buffer cap: small requests never wait for memory
RECV_BYTES = 64 * 1024
PIECE_BYTES = 64 * 1024  # what gunicorn's parser is given at a time (werkzeug reads 64 KiB)
MAX_RECV = 1024 * 1024  # one recv of a large body (each recv costs a GIL hand-off)
DRAIN_S = 1.0  # after an error answer, how long the rest of a request is read and discarded
STOP_LINGER_S = 1.0  # a stopping worker's idle keep-alive connections stay open this long
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# connection phases
IDLE, HEAD, BODY, HANDED, DRAIN, CLOSED = range(6)

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}


class Reject(Exception):  # noqa: N818 - control flow: answer this and close
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Conn:
    """One client connection and what the loop knows of its current request."""

    __slots__ = (
        "sock",
        "addr",
        "server",
        "buf",
        "phase",
        "deadline",
        "queued_at",
        "started",
        "scan",
        "head_len",
        "head",
        "length",
        "chunk_left",
        "body_seen",
        "chunks",
        "handed_bytes",
        "paused_left",
        "peer",
    )

    def __init__(self, sock: socket.socket, addr: Any, server: Any) -> None:
        self.sock = sock
        self.addr = addr
        self.server = server
        self.buf = bytearray()
        self.phase = IDLE
        self.deadline: float | None = None  # when the current phase times out
        self.queued_at: float | None = None  # the earliest deadline this conn has in the heap
        self.peer = addr[0] if isinstance(addr, tuple) and addr else ""
        self.reset()

    def reset(self) -> None:
        """Forget the request just handed over (the connection may carry another)."""
        self.started = 0.0  # when this request's clock started (0: at its first byte)
        self.chunks = 0
        self.scan = 0  # where the search for the end of the head (or of a chunk) resumes
        self.head_len = 0
        self.head: bytes | None = None  # the head to hand over when rewritten (Expect removed)
        self.length = 0  # Content-Length, or -1 for chunked
        self.chunk_left = -1  # chunked: bytes of data + CRLF left in this chunk; -1: a size line
        self.body_seen = 0
        self.handed_bytes = 0
        self.paused_left: float | None = None


def error_response(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def frame_head(head: bytes, max_body: int) -> tuple[int, bool, bytes | None]:
    """The framing of a request from its head (request line + headers + blank line).

    Returns ``(length, expects_continue, rewritten_head)``: ``length`` is the
    Content-Length, or -1 for a chunked body; ``rewritten_head`` is the head
    without its ``Expect: 100-continue`` line (answered here, so gunicorn must not
    answer it again) or None when unchanged.  Raises ``Reject`` for anything two
    HTTP parsers could frame differently.
    """
    lines = head[:-4].split(b"\r\n")
    request_line = lines[0]
    if b"\r" in request_line or b"\n" in request_line:
        raise Reject(400, "bare CR or LF in the request line")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    expect: list[int] = []
    for i in range(1, len(lines)):
        line = lines[i]
        if not line or line[0] in b" \t":
            raise Reject(400, "folded or empty header line")
        if b"\r" in line or b"\n" in line:
            raise Reject(400, "bare CR or LF in a header")
        name, colon, value = line.partition(b":")
        if not colon or name != name.strip() or not name:
            raise Reject(400, "malformed header line")
        low = name.lower()
        if low == b"content-length":
            lengths.append(value.strip())
        elif low == b"transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(b","))
        elif low == b"expect" and value.strip().lower() == b"100-continue":
            expect.append(i)
    length = 0
    if codings:
        if lengths:
            raise Reject(400, "both Content-Length and Transfer-Encoding")
        if codings != [b"chunked"]:
            raise Reject(501, "only Transfer-Encoding: chunked is supported")
        length = -1
    elif lengths:
        first = lengths[0]
        if not first.isdigit() or len(first) > 18 or any(v != first for v in lengths):
            raise Reject(400, "invalid or conflicting Content-Length")
        length = int(first)
        if length > max_body:
            raise Reject(
                413, f"request body is larger than {max_body} bytes (OCIFORGE_MAX_REQUEST_BYTES)"
            )
    rewritten = None
    if expect:
        lines = [line for i, line in enumerate(lines) if i not in expect]
        rewritten = b"\r\n".join(lines) + b"\r\n\r\n"
    wants_continue = bool(expect) and length != 0 and request_line.endswith(b"HTTP/1.1")
    return length, wants_continue, rewritten


def pieces(data: bytes | bytearray, size: int = PIECE_BYTES) -> Any:
    """``data`` as an iterator of ``bytes`` of at most ``size``, for gunicorn's parser.

    gunicorn's readers copy what is left of the chunk they hold on every read: one chunk of
    a whole 30 MiB body read 64 KiB at a time (as werkzeug reads) is quadratic. A bytearray
    is consumed as it is read (CPython frees its front as it shrinks), so the request is not
    held twice while the app reads its body.
    """
    if not isinstance(data, bytearray):
        view = memoryview(data)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
        return
    while data:
        with memoryview(data) as view:
            piece = bytes(view[:size])
        del data[:size]
        yield piece


class BufferingWorker(base.Worker):
    """gunicorn worker: whole requests are read by one selector loop, answered by threads.

    ``settings`` is set on the class by the server before gunicorn forks the workers.
    """

    settings: Settings = Settings()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.settings
        self.max_body = s.max_request_bytes
        self.header_timeout = s.header_timeout_s
        self.read_timeout = s.read_timeout_s
        self.max_held = s.max_buffered_bytes
        self.max_conns = s.max_connections
        self.keepalive = float(self.cfg.keepalive)
        self.held = 0  # request bytes in this worker: received, queued or being answered
        self.conns: set[Conn] = set()
        self.idle: dict[Conn, None] = {}  # idle connections, oldest first
        self.reading: dict[Conn, None] = {}  # connections receiving a request, oldest first
        self.bodies: dict[Conn, None] = {}  # of those, the ones receiving a body
        self.paused: deque[Conn] = deque()
        self.heap: list[tuple[float, int, Conn]] = []
        self.seq = 0
        self.jobs: queue.SimpleQueue[tuple[Conn, bytes | bytearray] | None] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[Conn, bool]] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.selector: selectors.BaseSelector | None = None
        self.accepting = False
        self.next_notify = 0.0

    # ------------------------------------------------------------------ lifecycle

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False  # the signal's wake-up byte on self.PIPE wakes the loop

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the loop wakes anyway
            os.write(self.PIPE[1], b".")

    def run(self) -> None:
        self.selector = sel = selectors.DefaultSelector()
        sel.register(self.PIPE[0], selectors.EVENT_READ, None)
        for listener in self.sockets:
            listener.setblocking(False)
        self._accept_on(True)
        for i in range(self.cfg.threads):
            thread = threading.Thread(target=self._thread_loop, name=f"ociforge-http-{i}")
            thread.daemon = True
            thread.start()
            self.threads.append(thread)
        try:
            while self.alive:
                self._tick()
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
            self._accept_on(False)
            now = time.monotonic()
            for conn in list(self.idle):
                self._set_deadline(conn, min(conn.deadline or now, now + STOP_LINGER_S))
            stop_at = now + self.cfg.graceful_timeout
            while self.conns and time.monotonic() < stop_at:
                self._tick()
        finally:
            for conn in list(self.conns):
                if conn.phase != HANDED:
                    self._close(conn)
            for _ in self.threads:
                self.jobs.put(None)
            for listener in self.sockets:
                listener.close()

    def _accept_on(self, on: bool) -> None:
        if on == self.accepting or self.selector is None:
            return
        for listener in self.sockets:
            if on:
                self.selector.register(listener, selectors.EVENT_READ, listener)
            else:
                self.selector.unregister(listener)
        self.accepting = on

    def _tick(self) -> None:
        now = time.monotonic()
        if now >= self.next_notify:
            self.notify()
            self.next_notify = now + 1.0
        timeout = 1.0
        if self.heap:
            timeout = min(timeout, max(0.0, self.heap[0][0] - now))
        assert self.selector is not None
        try:
            events = self.selector.select(timeout)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            events = []
        for key, _ in events:
            data = key.data
            if data is None:
                self._drain_pipe()
            elif isinstance(data, Conn):
                try:
                    self._on_readable(data)
                except Exception:  # noqa: BLE001 - one connection must not stop the loop
                    self.log.exception("Error reading a request")
                    self._close(data)
            else:
                self._accept(data)
        self._finish_handed()
        self._expire(time.monotonic())

    def _drain_pipe(self) -> None:
        try:
            while os.read(self.PIPE[0], 4096):
                pass
        except OSError:
            pass

    # ------------------------------------------------------------------ connections

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, addr = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.warning("Cannot accept a connection: %s", exc)
                    self._evict()  # out of descriptors: make room rather than spin
                    return
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED):
                    return
                raise
            if not self.alive:
                sock.close()
                return
            if len(self.conns) >= self.max_conns and not self._evict():
                sock.close()  # every connection is being answered: no room
                continue
            sock.setblocking(False)
            conn = Conn(sock, addr, listener.getsockname())
            self.conns.add(conn)
            self.idle[conn] = None
            # a fresh connection must send its request headers within the header timeout
            conn.started = time.monotonic()
            self._set_deadline(conn, conn.started + self.header_timeout)
            assert self.selector is not None
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _evict(self) -> bool:
        """Close the oldest idle, else the oldest still-arriving connection, to make room."""
        for group in (self.idle, self.reading):
            for conn in group:
                self._close(conn)
                return True
        return False

    def _close(self, conn: Conn) -> None:
        if conn.phase == CLOSED:
            return
        if conn.phase != HANDED and conn.paused_left is None and self.selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(conn.sock)
        self._release(len(conn.buf))
        conn.buf = bytearray()
        conn.phase = CLOSED
        conn.deadline = None
        self.conns.discard(conn)
        self.idle.pop(conn, None)
        self.reading.pop(conn, None)
        self.bodies.pop(conn, None)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _set_deadline(self, conn: Conn, when: float | None) -> None:
        """One heap entry per connection at a time (its earliest): re-queued when it pops."""
        conn.deadline = when
        if when is not None and (conn.queued_at is None or when < conn.queued_at):
            conn.queued_at = when
            self.seq += 1
            heapq.heappush(self.heap, (when, self.seq, conn))

    def _expire(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            when, _, conn = heapq.heappop(heap)
            if conn.queued_at != when:
                continue  # superseded by an earlier entry
            conn.queued_at = None
            if conn.phase == CLOSED or conn.deadline is None:
                continue
            if conn.deadline > now:
                self._set_deadline(conn, conn.deadline)
                continue
            if conn.phase == HEAD:
                self._reject(
                    conn,
                    Reject(
                        408,
                        "request headers not received within "
                        f"{self.header_timeout:g}s (OCIFORGE_HEADER_TIMEOUT)",
                    ),
                )
            elif conn.phase == BODY:
                self._reject(
                    conn,
                    Reject(
                        408,
                        f"request not received in full within {self.read_timeout:g}s "
                        "(OCIFORGE_READ_TIMEOUT)",
                    ),
                )
            else:  # idle past its keep-alive or header timeout, or done draining
                self._close(conn)

    def _reject(self, conn: Conn, reject: Reject) -> None:
        """Answer an error the app never sees, then read and discard briefly and close.

        Closing with unread request bytes would reset the connection before the client
        reads the answer.
        """
        logs.event(
            "request_rejected",
            level="warning",
            status=reject.status,
            error=reject.message,
            remote=conn.peer,
        )
        try:
            conn.sock.send(error_response(reject.status, reject.message))
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self._release(len(conn.buf))
        conn.buf = bytearray()
        self.idle.pop(conn, None)
        self.reading.pop(conn, None)
        self.bodies.pop(conn, None)
        if conn.paused_left is not None:
            conn.paused_left = None
            assert self.selector is not None
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.phase = DRAIN
        self._set_deadline(conn, time.monotonic() + DRAIN_S)

    # ------------------------------------------------------------------ reading requests

    def _on_readable(self, conn: Conn) -> None:
        size = RECV_BYTES
        if conn.phase == BODY and conn.length >= 0:  # as much as the body still needs
            size = min(max(conn.head_len + conn.length - len(conn.buf), RECV_BYTES), MAX_RECV)
        try:
            data = conn.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)  # the client closed (mid-request: nothing to answer)
            return
        if conn.phase == DRAIN:
            return
        conn.buf += data
        self.held += len(data)
        try:
            self._advance(conn)
        except Reject as reject:
            self._reject(conn, reject)

    def _advance(self, conn: Conn) -> None:
        """Move the request along with the bytes received; hand it over when complete."""
        now = time.monotonic()
        buf = conn.buf
        if conn.phase == IDLE:
            if buf[:1] in (b"\r", b"\n"):  # empty lines before a request are allowed
                kept = buf.lstrip(b"\r\n")
                self._release(len(buf) - len(kept))
                conn.buf = buf = kept
                if not buf:
                    return
            conn.phase = HEAD
            if not conn.started:  # a kept-alive connection: the clock starts now
                conn.started = now  # (a fresh one's started when it was accepted)
            self.idle.pop(conn, None)
            self.reading[conn] = None
            conn.deadline = conn.started + self.header_timeout
        if conn.phase == HEAD:
            end = buf.find(b"\r\n\r\n", max(0, conn.scan - 3))
            if end < 0:
                conn.scan = len(buf)
                if len(buf) > MAX_HEAD_BYTES:
                    raise Reject(431, f"request headers are larger than {MAX_HEAD_BYTES} bytes")
                self._set_deadline(conn, conn.deadline)
                return
            conn.head_len = end + 4
            length, wants_continue, conn.head = frame_head(
                bytes(buf[: conn.head_len]), self.max_body
            )
            conn.length = length
            conn.scan = conn.head_len
            conn.phase = BODY
            conn.deadline = conn.started + self.read_timeout
            self.bodies[conn] = None
            if wants_continue and len(buf) == conn.head_len:  # no body byte yet: ask for it
                with contextlib.suppress(OSError):
                    conn.sock.send(CONTINUE)
        end = self._body_end(conn)
        if end is None:
            self._set_deadline(conn, conn.deadline)
            if (
                self.held > self.max_held
                and conn.body_seen > SMALL_BODY
                and next(iter(self.bodies)) is not conn
            ):
                self._pause(conn)
            return
        self._hand_over(conn, end)

    def _body_end(self, conn: Conn) -> int | None:
        """Where the request ends in ``conn.buf``, or None while more is to come."""
        buf = conn.buf
        if conn.length >= 0:
            end = conn.head_len + conn.length
            conn.body_seen = min(len(buf), end) - conn.head_len
            return end if len(buf) >= end else None
        pos = conn.scan  # chunked
        while True:
            if conn.chunk_left < 0:  # a chunk-size line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if len(buf) - pos > MAX_CHUNK_LINE:
                        raise Reject(400, "chunk size line too long")
                    break
                size_text, *ext = bytes(buf[pos:eol]).split(b";", 1)
                if ext:  # whitespace is allowed before an extension only (as gunicorn)
                    size_text = size_text.rstrip(b" \t")
                if (
                    not size_text
                    or len(size_text) > 16
                    or size_text.strip(b"0123456789abcdefABCDEF")
                ):
                    raise Reject(400, "invalid chunk size")
                size = int(size_text, 16)
                pos = eol + 2
                if size == 0:  # the last chunk: trailer lines up to an empty line
                    while True:
                        eol = buf.find(b"\r\n", pos)
                        if eol < 0:
                            if len(buf) - conn.scan > MAX_TRAILER_BYTES:
                                raise Reject(400, "chunked trailer too long")
                            return None  # parsed again from the last-chunk line (conn.scan)
                        if eol == pos:
                            return eol + 2
                        pos = eol + 2
                conn.body_seen += size
                conn.chunks += 1
                if conn.chunks > MAX_CHUNKS:
                    raise Reject(400, f"chunked body has more than {MAX_CHUNKS} chunks")
                if conn.body_seen > self.max_body:
                    raise Reject(
                        413,
                        f"request body is larger than {self.max_body} bytes "
                        "(OCIFORGE_MAX_REQUEST_BYTES)",
                    )
                conn.chunk_left = size + 2
            if len(buf) - pos < conn.chunk_left:
                break
            pos += conn.chunk_left
            if buf[pos - 2 : pos] != b"\r\n":
                raise Reject(400, "chunk data not followed by CRLF")
            conn.chunk_left = -1
            conn.scan = pos
        conn.scan = pos if conn.chunk_left >= 0 else conn.scan
        if len(buf) - conn.head_len > self.max_body + CHUNK_OVERHEAD:
            raise Reject(
                413,
                f"request body is larger than {self.max_body} bytes (OCIFORGE_MAX_REQUEST_BYTES)",
            )
        return None

    def _pause(self, conn: Conn) -> None:
        """Stop reading a body while the worker holds too many request bytes.

        Its deadline is paused too: the wait is the server's, not the client's.
        """
        assert self.selector is not None and conn.deadline is not None
        self.selector.unregister(conn.sock)
        conn.paused_left = max(conn.deadline - time.monotonic(), 1.0)
        conn.deadline = None
        self.paused.append(conn)

    def _release(self, nbytes: int) -> None:
        self.held -= nbytes
        if not self.paused:
            return
        oldest = next(iter(self.bodies), None)
        while self.paused:
            conn = self.paused[0]
            if conn.phase != BODY or conn.paused_left is None:
                self.paused.popleft()  # closed or answered meanwhile
                continue
            if self.held >= self.max_held and conn is not oldest:
                break
            self.paused.popleft()
            self._resume(conn)
        if oldest is not None and oldest.paused_left is not None:
            self._resume(oldest)  # the oldest body always moves: progress is guaranteed

    def _resume(self, conn: Conn) -> None:
        assert self.selector is not None and conn.paused_left is not None
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._set_deadline(conn, time.monotonic() + conn.paused_left)
        conn.paused_left = None

    def _hand_over(self, conn: Conn, end: int) -> None:
        buf = conn.buf
        if end == len(buf):
            data: bytes | bytearray = buf
            conn.buf = bytearray()
        else:  # pipelined: the next request's bytes stay
            data = buf[:end]
            conn.buf = buf[end:]
        if conn.head is not None:  # Expect: 100-continue was answered here
            self.held += len(conn.head) - conn.head_len
            data = conn.head + data[conn.head_len :]
        conn.handed_bytes = len(data)
        assert self.selector is not None
        self.selector.unregister(conn.sock)
        conn.phase = HANDED
        conn.deadline = None
        self.reading.pop(conn, None)
        self.bodies.pop(conn, None)
        self.jobs.put((conn, data))

    def _finish_handed(self) -> None:
        """Connections back from a thread: keep them for their next request, or close."""
        while True:
            try:
                conn, keep = self.done.get_nowait()
            except queue.Empty:
                return
            handed = conn.handed_bytes
            conn.reset()
            self._release(handed)
            if not keep:
                self._close(conn)  # (still HANDED: not registered with the selector)
                continue
            try:
                conn.sock.setblocking(False)
                assert self.selector is not None
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError):  # the socket failed while it was answered
                self._close(conn)
                continue
            conn.phase = IDLE
            self.idle[conn] = None
            linger = self.keepalive if self.alive else min(self.keepalive, STOP_LINGER_S)
            self._set_deadline(conn, time.monotonic() + linger)
            if conn.buf:  # a pipelined request already arrived
                try:
                    self._advance(conn)
                except Reject as reject:
                    self._reject(conn, reject)
                except Exception:  # noqa: BLE001 - one connection must not stop the loop
                    self.log.exception("Error reading a request")
                    self._close(conn)

    # ------------------------------------------------------------------ answering (threads)

    def _thread_loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            conn, data = job
            keep = False
            try:
                keep = self._serve(conn, data)
            finally:
                self.done.put((conn, keep))
                self._wake()

    def _serve(self, conn: Conn, data: bytes | bytearray) -> bool:
        """Parse and answer one complete request (gunicorn's parser and response writer)."""
        req = None
        sock = conn.sock
        try:
            sock.settimeout(self.read_timeout)  # a client that does not read its answer
            parser = RequestParser(self.cfg, pieces(data), conn.addr)
            req = next(parser)
            return self._handle_request(req, conn)
        except (NoMoreData, StopIteration):
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, None):
                self.log.exception("Socket error processing request.")
            return False
        except Exception as exc:  # noqa: BLE001 - gunicorn answers 400/500 as gthread does
            self.handle_error(req, sock, conn.addr, exc)
            return False

    def _handle_request(self, req: Any, conn: Conn) -> bool:
        """gthread's ``handle_request``: the WSGI call and the response; True to keep alive."""
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.addr, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                    self._wake()
                resp.force_close()
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            return not resp.should_close()
        except OSError:
            raise
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # the answer has begun: a 500 now would corrupt it
                self.log.exception("Error handling request")
                return False
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:  # noqa: BLE001
                self.log.exception("Exception in post_request hook")
