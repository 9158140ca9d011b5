"""System packages across an air gap: ``ociforge fetch`` records them in the lock and caches their
``.deb`` files; the offline build (network cut) gives the online digest; with an empty cache it
names the missing ``.deb`` files and the fetch command; a bundle carries them and is rebuilt from
alone, offline, with the same digest. ``ociforge lock`` records them too.

libbsd0 (and its dependency libmd0) only: small, and what is proved does not need more.
"""

from __future__ import annotations

import json

import pytest

from ociforge.bases import syspackages
from tests.airgap.conftest import MODEL, PLATFORM, netns_cli, ok
from tests.conftest import run_cli

PKG = ["--system-package", "libbsd0"]


@pytest.fixture(scope="module")
def sysproject(tmp_path_factory, netns_ok):
    """A project fetched with a system package, and its online build: (folder, digest)."""
    d = tmp_path_factory.mktemp("sys-project")
    (d / "model.py").write_text(MODEL)
    fetch = ["fetch", "--platform", PLATFORM, *PKG, "--lock", "ociforge.lock", "--json"]
    fetched = json.loads(ok(run_cli(*fetch, cwd=d)).stdout)
    assert fetched["platforms"][PLATFORM]["debs"] == 2
    build = ["build", "model.py:predict", "--platform", PLATFORM, *PKG, "--lock", "ociforge.lock",
             "--to", f"oci:{d / 'online'}:m", "--compression", "zstd", "--json"]  # fmt: skip
    online = json.loads(ok(run_cli(*build, cwd=d)).stdout)
    return d, online["digest"]


def test_the_lock_records_them(sysproject):
    d, _digest = sysproject
    (entry,) = syspackages.read_locks(d / "ociforge.lock")
    assert (entry.architecture, entry.suite, entry.requested) == ("amd64", "bookworm", ("libbsd0",))
    assert [p.name for p in entry.packages] == ["libbsd0", "libmd0"]
    assert all(len(p.sha256) == 64 for p in entry.packages)


def test_offline_build_matches_and_names_missing_debs(sysproject, tmp_path):
    d, digest = sysproject
    args = ["build", "model.py:predict", "--platform", PLATFORM, *PKG, "--lock", "ociforge.lock",
            "--offline", "--compression", "zstd", "--json"]  # fmt: skip
    out = json.loads(ok(netns_cli(*args, "--to", f"oci:{tmp_path / 'off'}:m", cwd=d)).stdout)
    assert out["digest"] == digest
    empty = tmp_path / "empty-cache"
    proc = netns_cli(*args, "--to", f"oci:{tmp_path / 'none'}:m", cwd=d,
                     env={"OCIFORGE_CACHE": str(empty)})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "libbsd0_0" in proc.stderr and "libmd0_" in proc.stderr  # with the base's and wheels
    assert "--system-package libbsd0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "none").exists()


def test_bundle_carries_them_and_rebuilds_offline(sysproject, tmp_path):
    d, digest = sysproject
    path = tmp_path / "m.bundle.tar"
    export = ["bundle", "export", f"oci:{d / 'online'}:m", "--lock", d / "ociforge.lock",
              "-o", path, "--json"]  # fmt: skip
    manifest = json.loads(ok(run_cli(*export)).stdout)
    debs = {f["name"].split("_")[0] for f in manifest["files"] if f["kind"] == "deb"}
    assert {"libbsd0", "libmd0"} <= debs
    closed = tmp_path / "closed-cache"  # nothing from this side but the bundle
    rebuild = ["bundle", "rebuild", path, "--to", f"oci:{tmp_path / 'rebuilt'}:m", "--json"]
    proc = ok(netns_cli(*rebuild, env={"OCIFORGE_CACHE": str(closed)}))
    assert json.loads(proc.stdout)["digest"] == digest


def test_lock_command_records_them(tmp_path):
    lock = tmp_path / "ociforge.lock"
    proc = ok(run_cli("lock", "--platform", "linux/amd64,linux/arm64", *PKG,
                      "six==1.16.0", "-o", lock))  # fmt: skip
    assert "amd64: 2 Debian bookworm packages" in proc.stdout
    entries = {e.architecture: e for e in syspackages.read_locks(lock)}
    assert sorted(entries) == ["amd64", "arm64"]
    assert [p.name for p in entries["arm64"].packages] == ["libbsd0", "libmd0"]
    assert json.loads(lock.read_text())["targets"]  # the wheels' lock as before
