"""Helpers shared by the benchmarks: timing child processes, peak memory, and table printing."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def run_timed(
    cmd: Sequence[str] | str, *, shell: bool = False, env: dict | None = None, cwd=None
) -> tuple[float, int, str]:
    """Wall seconds, peak RSS of the child (KiB; for a shell pipeline, its largest process), stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, shell=shell, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is a maximum over all children so far: report it only if it grew.
    return elapsed, max(peak, before) if peak > before else peak, proc.stdout


def repeat(fn: Callable[[], tuple[float, int]], runs: int) -> dict:
    times, peaks = [], []
    for _ in range(runs):
        t, p = fn()
        times.append(t)
        peaks.append(p)
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "peak_kib": max(peaks),
    }


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``columns`` as (key, header)."""
    head = "| " + " | ".join(h for _k, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k, _h in columns) + " |")
    return "\n".join(lines)
