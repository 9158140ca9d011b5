"""Fixtures for the air-gap tests: a model project, its lock and warm caches (``ociforge fetch``),
the online build pushed to a real registry, and a bundle exported from that registry.

Everything is built for linux/amd64 only (arm64 adds nothing to what is proved here) and shares
the session cache of ``tests/conftest.py``. The network is really cut with ``unshare -n`` (a new
network namespace: only a loopback interface, down until a test brings it up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.support.registry import RegistryServer

PLATFORM = "linux/amd64"
MODEL = """
WEIGHTS = [0.5, -0.25, 2.0]


def predict(row):
    return sum(w * x for w, x in zip(WEIGHTS, row))
"""


def netns_cli(*args: str, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m ociforge ARGS`` in a network namespace of its own (no route anywhere)."""
    cmd = ["unshare", "-n", sys.executable, "-m", "ociforge", *map(str, args)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        pytest.fail(f"exited {proc.returncode}:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    return proc


@pytest.fixture(scope="session")
def netns_ok():
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to cut the network")
    proc = subprocess.run(["unshare", "-n", "ip", "-o", "link"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot create a network namespace (root needed): {proc.stderr}")
    links = [line.split(":")[1].strip() for line in proc.stdout.splitlines() if line.strip()]
    assert links == ["lo"], f"a new network namespace should hold only loopback, got {links}"


@pytest.fixture(scope="session")
def project(tmp_path_factory, netns_ok):
    """A model project with a lock and warm caches: ``ociforge fetch`` on the connected side."""
    d = tmp_path_factory.mktemp("airgap-project")
    (d / "model.py").write_text(MODEL)
    proc = ok(run_cli("fetch", "--platform", PLATFORM, "--lock", "ociforge.lock", "--json", cwd=d))
    fetched = json.loads(proc.stdout)
    assert fetched["platforms"][PLATFORM]["wheels"] > 0
    assert (d / "ociforge.lock").is_file()
    return d


@pytest.fixture(scope="session")
def registry_a(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("reg-a"), mode="http") as reg:
        yield reg


@pytest.fixture(scope="session")
def online(project, registry_a):
    """The online build of the project, pushed to registry A: the digests everything must match."""
    ref = registry_a.ref("models/m:1")
    proc = ok(
        run_cli(
            "build",
            "model.py:predict",
            "--platform",
            PLATFORM,
            "--lock",
            "ociforge.lock",
            "--to",
            ref,
            "--json",
            cwd=project,
        )
    )
    return ref, json.loads(proc.stdout)["digest"]


@pytest.fixture(scope="session")
def bundle(project, online, tmp_path_factory):
    """A bundle exported from registry A, with the lock (so it can be rebuilt from)."""
    ref, _digest = online
    path = tmp_path_factory.mktemp("bundle") / "m.bundle.tar"
    proc = ok(
        run_cli(
            "bundle",
            "export",
            ref,
            "--lock",
            project / "ociforge.lock",
            "-o",
            path,
            "--json",
        )
    )
    return path, json.loads(proc.stdout)


def image_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []
