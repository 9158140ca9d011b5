"""One JSON object per line on stdout: request lines and runtime events.

Container log collectors expect structured lines on stdout.  Each line is
written with a single ``os.write`` on the unbuffered file descriptor, so lines
from different threads and worker processes never interleave (writes up to
PIPE_BUF bytes to a pipe are atomic) and nothing is lost in a buffer when a
worker is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from typing import Any

STDOUT = 1


def _write(record: dict[str, Any]) -> None:
    line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
    with contextlib.suppress(OSError):  # a closed stdout must not fail requests
        os.write(STDOUT, line.encode("utf-8", "backslashreplace"))


def event(name: str, level: str = "info", **fields: Any) -> None:
    """A runtime event (model loaded, load failed, model error...)."""
    _write(
        {"ts": round(time.time(), 3), "level": level, "event": name, "pid": os.getpid(), **fields}
    )


def request(method: str, route: str, path: str, status: int, latency_ms: float) -> None:
    """The per-request line: method, route template, status, latency.

    Formatted by hand (it runs once per request); only the strings a client
    controls go through ``json.dumps`` for escaping.
    """
    line = (
        f'{{"ts":{time.time():.3f},"event":"request","method":{json.dumps(method)},'
        f'"route":{json.dumps(route)},"path":{json.dumps(path)},"status":{status},'
        f'"latency_ms":{latency_ms:.3f},"pid":{os.getpid()}}}\n'
    )
    with contextlib.suppress(OSError):
        os.write(STDOUT, line.encode("utf-8", "backslashreplace"))


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
