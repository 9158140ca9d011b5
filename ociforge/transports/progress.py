"""What a push or pull shows while it runs: bars on a terminal, plain lines in CI, or nothing.

A push can take minutes; on a terminal the user wants to see each blob move, in CI a log with one
line per blob is what stays readable. Only digests, sizes and references are ever shown: nothing
here can see a credential.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

from ..oci.manifest import Descriptor


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class Progress:
    """The interface push and pull report to; this base class shows nothing (``--quiet``)."""

    def begin(self, what: str, blobs: int, total_bytes: int) -> None: ...

    def start(self, desc: Descriptor) -> None: ...

    def advance(self, desc: Descriptor, n: int) -> None: ...

    def restart(self, desc: Descriptor, offset: int) -> None:
        """An upload or download goes back to ``offset`` (a retry or a fresh session)."""

    def done(self, desc: Descriptor, outcome: str) -> None:
        """``outcome``: pushed, skipped (already there), mounted, or pulled."""

    def message(self, text: str) -> None: ...

    def finish(self, summary: str) -> None: ...


class NullProgress(Progress):
    pass


class LineProgress(Progress):
    """One line per finished blob and a summary: readable in CI logs."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def begin(self, what: str, blobs: int, total_bytes: int) -> None:
        self._print(f"{what}: {blobs} blobs, {human(total_bytes)}")

    def done(self, desc: Descriptor, outcome: str) -> None:
        self._print(f"  {short(desc.digest)} {outcome} ({human(desc.size)})")

    def message(self, text: str) -> None:
        self._print(text)

    def finish(self, summary: str) -> None:
        self._print(summary)


class TtyProgress(Progress):
    """A bar per blob in flight, redrawn in place (at most ~10 times a second)."""

    WIDTH = 28

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._active: dict[str, list] = {}  # digest -> [desc, sent]
        self._drawn = 0
        self._last = 0.0
        self.what = ""

    def begin(self, what: str, blobs: int, total_bytes: int) -> None:
        self.what = what
        with self._lock:
            self.stream.write(f"{what}: {blobs} blobs, {human(total_bytes)}\n")

    def start(self, desc: Descriptor) -> None:
        with self._lock:
            self._active[desc.digest] = [desc, 0]
            self._draw(force=True)

    def advance(self, desc: Descriptor, n: int) -> None:
        with self._lock:
            entry = self._active.get(desc.digest)
            if entry:
                entry[1] += n
                self._draw()

    def restart(self, desc: Descriptor, offset: int) -> None:
        with self._lock:
            entry = self._active.get(desc.digest)
            if entry:
                entry[1] = offset
                self._draw(force=True)

    def done(self, desc: Descriptor, outcome: str) -> None:
        with self._lock:
            self._active.pop(desc.digest, None)
            self._clear()
            self.stream.write(f"  {short(desc.digest)} {outcome:<8} {human(desc.size)}\n")
            self._draw(force=True)

    def message(self, text: str) -> None:
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self._draw(force=True)

    def finish(self, summary: str) -> None:
        with self._lock:
            self._clear()
            self.stream.write(summary + "\n")
            self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self._clear()
        for desc, sent in list(self._active.values())[:8]:
            frac = min(sent / desc.size, 1.0) if desc.size else 1.0
            fill = int(frac * self.WIDTH)
            bar = "#" * fill + "-" * (self.WIDTH - fill)
            self.stream.write(f"  {short(desc.digest)} [{bar}] {human(sent)}/{human(desc.size)}\n")
            self._drawn += 1
        self.stream.flush()


def make_progress(quiet: bool = False, stream: TextIO | None = None) -> Progress:
    """Nothing when quiet; bars on a terminal; plain lines in CI or when piped."""
    if quiet:
        return NullProgress()
    stream = stream or sys.stderr
    in_ci = bool(os.environ.get("CI")) or os.environ.get("TERM") == "dumb"
    if not in_ci and hasattr(stream, "isatty") and stream.isatty():
        return TtyProgress(stream)
    return LineProgress(stream)
