"""The machine a table was measured on, printed above it (ratios hold only within one run)."""

from __future__ import annotations

import os
import platform
import subprocess
import time


def _field(path: str, name: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_model() -> str:
    return _field("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"


def _mem_gib() -> float:
    kib = _field("/proc/meminfo", "MemTotal").split()
    return int(kib[0]) / (1 << 20) if kib else 0.0


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def source() -> str:
    """The ociforge commit measured, and ``+ changes in ...`` when the working tree differs
    (several people share it: the table must say what code it timed)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "ociforge", "runtimes"],
            capture_output=True,
            text=True,
        ).stdout.split("\n")
    except OSError:
        return "?"
    changed = sorted(ln[3:] for ln in dirty if ln.strip())
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def describe() -> dict:
    return {
        "ociforge": source(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(_mem_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "buildah": _version(["buildah", "--version"]),
        "skopeo": _version(["skopeo", "--version"]),
    }


def line(info: dict) -> str:
    return (
        f"{info['date']}, ociforge {info['ociforge']}; {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"Linux {info['kernel']}; Python {info['python']}; {info['buildah']}; {info['skopeo']}"
    )
