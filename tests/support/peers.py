"""Peer tools, each in a virtual environment of its own (their pins clash with ours and with
each other): made once under ``~/.cache/ociforge-test/venvs/NAME`` (or ``$OCIFORGE_TEST_VENVS``)
and reused when present. When a peer cannot be had the test fails: a skipped
interoperability check proves nothing.

Each peer is installed with uv (a dependency of ociforge), or venv + pip when this Python has no
uv. ``seldon-core`` is special: its last release (1.19.0) declares Python >= 3.12 and pins old
server dependencies, while its client and wrapper code run on 3.11; it is installed with pip,
``--no-deps --ignore-requires-python``, plus the few packages its REST client needs (requests,
numpy, protobuf 5.29.5 and grpcio for its generated modules, flask and prometheus_client
which its utils import).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# name: (requirements, module that must import, pip options; None = uv with dependencies)
PEERS: dict[str, tuple[list[list[str]], str, bool]] = {
    "kserve-storage": ([["kserve-storage==0.21.0"]], "kserve_storage", False),
    "oras": ([["oras==0.2.43"]], "oras.client", False),
    "tritonclient": ([["tritonclient[http]==2.73.0", "numpy"]], "tritonclient.http", False),
    "kserve": ([["kserve==0.21.0"]], "kserve", False),
    "seldon-core": (
        [
            ["--no-deps", "--ignore-requires-python", "seldon-core==1.19.0"],
            # what seldon_client imports: requests, numpy, its protobuf (pinned) and grpc
            # modules, and flask + prometheus_client through seldon_core.utils
            ["requests", "numpy", "protobuf==5.29.5", "grpcio", "flask", "prometheus_client"],
        ],
        "seldon_core.seldon_client",
        True,
    ),
}


def venv_root() -> Path:
    return Path(
        os.environ.get("OCIFORGE_TEST_VENVS") or Path.home() / ".cache" / "ociforge-test" / "venvs"
    )


def _has_uv() -> bool:
    return (
        subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True).returncode
        == 0
    )


def peer_python(
    name: str,
    requirements: list[str] | None = None,
    module: str | None = None,
) -> Path:
    """The Python of the venv holding peer ``name``, made (once, under a lock) when missing.

    ``requirements``/``module`` name a peer not in ``PEERS`` (installed with uv, dependencies
    included); a known name needs neither.
    """
    if requirements is not None:
        steps_req, module, use_pip = [list(requirements)], module or name, False
    else:
        steps_req, module, use_pip = PEERS[name]
    root = venv_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / name
    py = venv / "bin" / "python"
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ok = (
            py.exists()
            and subprocess.run([py, "-c", f"import {module}"], capture_output=True).returncode == 0
        )
        if ok:
            return py
        if _has_uv() and not use_pip:
            steps = [
                [sys.executable, "-m", "uv", "venv", "-q", "--python", sys.executable, str(venv)]
            ]
            steps += [
                [sys.executable, "-m", "uv", "pip", "install", "-q", "--python", str(py), *req]
                for req in steps_req
            ]
        else:
            steps = [[sys.executable, "-m", "venv", "--clear", str(venv)]]
            steps += [
                [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *req]
                for req in steps_req
            ]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            if r.returncode != 0:
                pytest.fail(f"cannot install {name} into {venv}:\n{r.stdout}\n{r.stderr}")
        r = subprocess.run([py, "-c", f"import {module}"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"{name} installed into {venv} but `import {module}` fails:\n{r.stderr}")
    return py


def run_peer(python: Path | str, script: str, args: Any = None, timeout: float = 180) -> Any:
    """Run ``script`` (Python source) with a peer's Python (a path, or a name in ``PEERS``),
    ``json.dumps(args)`` as its ``sys.argv[1]``; returns the JSON its last stdout line prints.
    A script that fails fails the test, with its output."""
    if not isinstance(python, Path) and os.path.sep not in str(python):
        python = peer_python(str(python))
    r = subprocess.run(
        [str(python), "-c", script, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    if r.returncode != 0:
        pytest.fail(f"peer script failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    if not lines:
        pytest.fail(f"peer script printed nothing:\n{r.stderr}")
    return json.loads(lines[-1])
