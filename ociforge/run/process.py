"""Starting a :class:`~.sandbox.Sandbox` and stopping it cleanly.

bubblewrap (0.8, and later versions by default) does not pass signals on: a SIGTERM or a Ctrl-C
that reaches ``bwrap`` kills it, and ``--die-with-parent`` then kills the program with SIGKILL,
so a server never finishes its requests. So ``bwrap`` runs in a session of its own (the
terminal's Ctrl-C reaches only ``ociforge``), reports the pid of its sandbox's init on
``--info-fd``, and the signal goes to the program itself, the first child of that init. The
exit status is the program's (``bwrap`` passes it on). A program that has not stopped
``grace`` seconds after the signal, or a second signal, gets SIGKILL (its whole pid namespace
dies with the init).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .sandbox import Sandbox

_INFO_TIMEOUT = 60.0  # seconds for bwrap to set the sandbox up and say so


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except (OSError, ValueError):
        pass
    out = []  # kernels without CONFIG_PROC_CHILDREN: every process's parent, from its stat
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _start_time(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 1 << 62


class Started:
    """A running sandbox: its ``bwrap`` process, the sandbox's init, and the program."""

    def __init__(self, popen: subprocess.Popen, init_pid: int | None) -> None:
        self.popen = popen
        self.init_pid = init_pid
        self._program: int | None = None

    def program_pid(self) -> int | None:
        """The host pid of the program (the init's first child: orphans adopted later by the
        init are younger), or None before it started or after it ended."""
        if self._program is None and self.init_pid is not None and self.popen.poll() is None:
            kids = _children(self.init_pid)
            if kids:
                self._program = min(kids, key=_start_time)
        return self._program

    def send(self, sig: int) -> bool:
        """Send ``sig`` to the program; False when there is none (yet, or any more)."""
        pid = self.program_pid()
        if pid is None or self.popen.poll() is not None:
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the sandbox's init (every process of its pid namespace dies) and ``bwrap``."""
        for pid in (self.init_pid, self.popen.pid):
            if pid is not None and self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """The program's exit status (128 + N for a signal N, as a shell says it)."""
        rc = self.popen.wait(timeout)
        return 128 - rc if rc < 0 else rc

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> int:
        """Ask the program to stop, wait up to ``grace`` seconds, then kill it."""
        if self.popen.poll() is None:
            if self.send(sig):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    return self.wait(grace)
            self.kill()
        return self.wait()


def _read_info(fd: int, popen: subprocess.Popen) -> int | None:
    """The ``child-pid`` bwrap writes on ``--info-fd`` once the sandbox is set up; None when it
    exited first (its error is on its stderr)."""
    data = b""
    deadline = time.monotonic() + _INFO_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
                with contextlib.suppress(ValueError):
                    return int(json.loads(data)["child-pid"])
            elif popen.poll() is not None:
                break
    finally:
        os.close(fd)
    return None


def start(sandbox: Sandbox, **popen: Any) -> Started:
    """Start ``sandbox`` in the background; ``popen`` are :class:`subprocess.Popen`'s options
    (``stdout``, ``stderr``, ``stdin``...)."""
    read_end, write_end = os.pipe()
    cmd = sandbox.command()
    cmd.insert(1, str(write_end))
    cmd.insert(1, "--info-fd")
    try:
        proc = subprocess.Popen(cmd, pass_fds=(write_end,), start_new_session=True, **popen)
    except OSError as e:
        os.close(read_end)
        raise InvalidInput(f"cannot start bwrap: {e.strerror or e}") from None
    finally:
        os.close(write_end)
    return Started(proc, _read_info(read_end, proc))


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run(sandbox: Sandbox, *, stop_signal: int = signal.SIGTERM, grace: float = 10.0) -> int:
    """Run ``sandbox`` in the foreground (the caller's stdin, stdout and stderr) and return the
    program's exit status. Ctrl-C goes to the program as SIGINT; SIGTERM and SIGHUP as
    ``stop_signal`` (the image's ``StopSignal``); one that has not stopped ``grace`` seconds
    later, or a second signal, is killed."""
    started = start(sandbox)
    asked: list[float] = []

    def forward(sig: int, _frame: object) -> None:
        if asked:
            started.kill()
            return
        asked.append(time.monotonic())
        if not started.send(sig if sig == signal.SIGINT else stop_signal):
            started.kill()

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        while True:
            try:
                return started.wait(0.5)
            except subprocess.TimeoutExpired:
                if asked and time.monotonic() - asked[0] > grace:
                    started.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started.popen.poll() is None:
            started.kill()
            started.popen.wait()
