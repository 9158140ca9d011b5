"""Peer servers the table compares against, each in a virtual environment of its own.

MLServer pins its own FastAPI, uvicorn, grpcio and protobuf, which clash with ours: it gets a
venv under ``~/.cache/ociforge-bench/venvs/NAME`` (``$OCIFORGE_BENCH_HOME``), made once with uv
(a dependency of ociforge) and reused while its module still imports. scikit-learn is pinned to
the version of this interpreter, so the model saved here loads there unchanged.
"""

from __future__ import annotations

import fcntl
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

from .bases import bench_home

# uvloop < 0.22: MLServer 1.7.1's inference workers (parallel_workers >= 1, its default) call
# asyncio.get_event_loop() in a fresh process, which uvloop 0.22+ refuses ("There is no current
# event loop"): with the newest uvloop every worker dies at start and the model never loads.
MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22")


def mlserver_requirements() -> list[str]:
    return [*MLSERVER, f"scikit-learn=={md.version('scikit-learn')}"]


def venv_python(name: str, requirements: list[str], module: str, log=print) -> Path:
    """The Python of venv ``name`` holding ``requirements`` (made under a lock when missing or
    when ``import module`` fails there). Installing is setup: never timed."""
    root = bench_home() / "venvs"
    root.mkdir(parents=True, exist_ok=True)
    venv = root / name
    py = venv / "bin" / "python"
    stamp = venv / ".requirements"
    want = "\n".join(requirements)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (
            py.exists()
            and stamp.is_file()
            and stamp.read_text() == want
            and subprocess.run([py, "-c", f"import {module}"], capture_output=True).returncode == 0
        ):
            return py
        log(f"making the {name} venv ({' '.join(requirements)})")
        uv = [sys.executable, "-m", "uv"]
        steps = [
            [*uv, "venv", "-q", "--clear", "--python", sys.executable, str(venv)],
            [*uv, "pip", "install", "-q", "--python", str(py), *requirements],
        ]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if r.returncode:
                raise RuntimeError(f"cannot make venv {name}: {r.stderr[-2000:]}")
        r = subprocess.run([py, "-c", f"import {module}"], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"venv {name}: `import {module}` fails: {r.stderr[-2000:]}")
        stamp.write_text(want)
    return py


def mlserver(log=print) -> Path:
    """The ``mlserver`` executable of its venv."""
    py = venv_python("mlserver", mlserver_requirements(), "mlserver_sklearn", log)
    return py.parent / "mlserver"


if __name__ == "__main__":
    print(mlserver())
