"""Fixtures shared by every test folder.

The blob cache is redirected to a folder of the test session (``OCIFORGE_CACHE``), so tests never
touch the user's cache and start from the same state on every machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so every folder can `from tests.support... import ...`
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    # OCIFORGE_TEST_CACHE keeps one warm cache across runs while developing; CI starts empty.
    keep = os.environ.get("OCIFORGE_TEST_CACHE")
    cache = Path(keep) if keep else tmp_path_factory.mktemp("ociforge-cache")
    old = os.environ.get("OCIFORGE_CACHE")
    os.environ["OCIFORGE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("OCIFORGE_CACHE", None)
    else:
        os.environ["OCIFORGE_CACHE"] = old


def run_cli(
    *args: str, cwd: str | Path | None = None, env: dict | None = None, unprivileged: bool = False
) -> subprocess.CompletedProcess:
    """Run the real ``ociforge`` entry point in a subprocess.

    ``unprivileged`` drops the capabilities that let root ignore file permissions, so a mode-000
    file is unreadable and a read-only folder unwritable, as for any ordinary user.
    """
    cmd = [sys.executable, "-m", "ociforge", *map(str, args)]
    if unprivileged:
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


def run_tool(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a real peer tool (skopeo, umoci, podman...) and fail the test with its stderr."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout}"
        )
    return proc


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def tool():
    return run_tool


def podman_command(root, run_root) -> list[str]:
    """podman with storage of its own (vfs: no kernel overlay needed) and no system services."""
    return [
        "podman", "--root", str(root), "--runroot", str(run_root), "--storage-driver", "vfs",
        "--cgroup-manager", "cgroupfs", "--events-backend", "none",
    ]  # fmt: skip


@pytest.fixture
def podman(tmp_path):
    """A podman command line with its own storage (vfs) under a short path, as root or rootless."""
    import shutil
    import tempfile

    run_root = tempfile.mkdtemp(prefix="pm-", dir="/tmp")  # podman limits runroot to 50 characters
    cmd = podman_command(tmp_path / "podman-root", run_root)
    yield cmd
    shutil.rmtree(run_root, ignore_errors=True)


@pytest.fixture(scope="session")
def engine():
    """A Docker Engine API: ``podman system service`` on its own socket and storage; stopped after."""
    import docker

    tmp = Path(tempfile.mkdtemp(prefix="pmsvc-", dir="/tmp"))
    sock = tmp / "api.sock"
    proc = subprocess.Popen(
        [
            *podman_command(tmp / "root", tmp / "run"),
            "system",
            "service",
            "--time=0",
            f"unix://{sock}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"unix://{sock}"
    deadline = time.monotonic() + 30
    while True:
        try:
            docker.DockerClient(base_url=url).ping()
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(
                    f"podman system service did not start: {proc.stderr.read().decode()[-2000:]}"
                )
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(tmp, ignore_errors=True)
