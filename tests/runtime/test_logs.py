"""The request log of ``ociforge_runtime.logs``: escaping, and what a forked worker inherits.

gunicorn forks its workers from the arbiter; a worker must log with its own pid, its own
flusher thread, and never deadlock on a lock some other thread held at the fork.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

RUNTIMES = Path(__file__).resolve().parents[2] / "runtimes"
if str(RUNTIMES) not in sys.path:
    sys.path.insert(0, str(RUNTIMES))

from ociforge_runtime import logs  # noqa: E402


@pytest.fixture
def captured(tmp_path, monkeypatch):
    """Send the log to a file; returns a reader of its JSON lines."""
    path = tmp_path / "stdout"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    monkeypatch.setattr(logs, "STDOUT", fd)
    logs.flush()  # nothing of an earlier test's lines lands here

    def records() -> list[dict]:
        logs.flush()
        return [json.loads(line) for line in path.read_text().splitlines()]

    yield records
    logs.flush()
    os.close(fd)


def test_client_strings_are_escaped_and_the_memo_stays_bounded(captured):
    odd = '/p"a\\th\n\x01é'
    logs.request("POST", "/predict", odd, 200, 1.5)
    for i in range(logs._QUOTED_MAX * 2):
        logs.request("GET", "<unmatched>", f"/scan/{i}", 404, 0.1)
    recs = captured()
    assert recs[0]["path"] == odd and recs[0]["status"] == 200 and recs[0]["pid"] == os.getpid()
    assert [r["path"] for r in recs[1:]] == [f"/scan/{i}" for i in range(logs._QUOTED_MAX * 2)]
    assert len(logs._QUOTED) <= logs._QUOTED_MAX


def _wait_child(pid: int, timeout: float = 20.0) -> int:
    """The child's exit code; a child still running after ``timeout`` is killed and fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} hung (a lock inherited from the parent?)")


def test_a_forked_worker_logs_its_own_lines_even_if_the_lock_was_held(captured):
    logs.request("GET", "/parent", "/parent", 200, 1.0)  # the parent's flusher is running
    held = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with logs._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: the lock's holder does not exist here
        code = 1
        try:
            logs.request("GET", "/child", "/child", 201, 2.0)
            logs.flush()
            code = 0
        finally:
            os._exit(code)
    release.set()
    holder.join()
    assert _wait_child(pid) == 0
    recs = captured()
    child = [r for r in recs if r["route"] == "/child"]
    parent = [r for r in recs if r["route"] == "/parent"]
    assert len(child) == 1 and child[0]["pid"] == pid and child[0]["status"] == 201
    # the parent's pending line is written once, by the parent, not again by the child
    assert len(parent) == 1 and parent[0]["pid"] == os.getpid()


def test_a_forked_worker_flushes_on_its_own_thread(captured, tmp_path):
    logs.request("GET", "/warm", "/warm", 200, 1.0)  # flusher started in the parent
    done = tmp_path / "done"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            logs.request("GET", "/late", "/late", 200, 1.0)
            # no explicit flush: only the child's own flusher thread can write the line
            for _ in range(200):
                threading.Event().wait(logs.FLUSH_S)
                if "/late" in Path(f"/proc/self/fd/{logs.STDOUT}").read_text():
                    code = 0
                    break
            done.write_text(str(code))
        finally:
            os._exit(code)
    assert _wait_child(pid) == 0, "the child's line was never flushed by a thread of its own"
    assert [r["pid"] for r in captured() if r["route"] == "/late"] == [pid]
