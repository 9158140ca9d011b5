"""One JSON object per line on stdout: request lines and runtime events.

Container log collectors expect structured lines on stdout.  Lines are written
with ``os.write`` on the raw file descriptor, whole lines only, so lines from
different threads and worker processes never interleave.  Request lines (the
hot path) are buffered and written together at most ``FLUSH_S`` later by one
thread: a write system call per request measurably cut throughput.  Events
(errors, start-up, shutdown) flush the buffer and are written at once, so the
log stays in order and the important lines are never held back.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import traceback
from typing import Any

STDOUT = 1


FLUSH_S = 0.05
_lock = threading.Lock()
_pending: list[str] = []
_flusher: list[threading.Thread] = []
_pid = os.getpid()
_QUOTED: dict[str, str] = {}
_QUOTED_MAX = 256


def _after_fork_in_child() -> None:
    """A forked worker starts with its own lock, no pending lines and no flusher yet.

    Threads do not survive a fork, and a lock another thread held at that moment
    would stay held forever in the child.
    """
    global _lock, _pid
    _lock = threading.Lock()
    _pending.clear()
    _flusher.clear()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _emit(text: str) -> None:
    data = text.encode("utf-8", "backslashreplace")
    with contextlib.suppress(OSError):  # a closed stdout must not fail requests
        while data:
            data = data[os.write(STDOUT, data) :]


def flush() -> None:
    """Write buffered request lines now (also called at worker exit)."""
    with _lock:
        text = "".join(_pending)
        _pending.clear()
        if text:
            _emit(text)


def _flush_loop() -> None:
    while True:
        time.sleep(FLUSH_S)
        flush()


def _write(record: dict[str, Any]) -> None:
    line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
    with _lock:
        text = "".join(_pending) + line
        _pending.clear()
        _emit(text)


def event(name: str, level: str = "info", **fields: Any) -> None:
    """A runtime event (model loaded, load failed, model error...)."""
    _write({"ts": round(time.time(), 3), "level": level, "event": name, "pid": _pid, **fields})


def _quoted(text: str) -> str:
    """``json.dumps(text)``, remembered for the few methods, routes and paths a server sees."""
    quoted = _QUOTED.get(text)
    if quoted is None:
        quoted = json.dumps(text)
        if len(_QUOTED) < _QUOTED_MAX:  # paths are the client's: never an unbounded cache
            _QUOTED[text] = quoted
    return quoted


def request(method: str, route: str, path: str, status: int, latency_ms: float) -> None:
    """The per-request line: method, route template, status, latency.

    Formatted by hand (it runs once per request); the strings a client controls
    are escaped by ``json.dumps`` (remembered, see ``_quoted``).
    """
    line = (
        f'{{"ts":{time.time():.3f},"event":"request","method":{_quoted(method)},'
        f'"route":{_quoted(route)},"path":{_quoted(path)},"status":{status},'
        f'"latency_ms":{latency_ms:.3f},"pid":{_pid}}}\n'
    )
    with _lock:
        _pending.append(line)
        if not _flusher:
            _flusher.append(threading.Thread(target=_flush_loop, name="ociforge-log", daemon=True))
            _flusher[0].start()


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
