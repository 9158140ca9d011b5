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


def describe() -> dict:
    return {
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
        f"{info['date']}; {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"Linux {info['kernel']}; Python {info['python']}; {info['buildah']}; {info['skopeo']}"
    )
