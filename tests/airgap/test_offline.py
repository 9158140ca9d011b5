"""Offline builds with the network really cut (``unshare -n``: only loopback, and it is down).

From warm caches and a lock, the build succeeds and gives the digests of the online build of the
same inputs; from an empty cache it fails at once with everything that is missing, the command
that would fetch it, and nothing written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.airgap.conftest import PLATFORM, image_dirs, netns_cli, ok
from tests.conftest import run_cli


def test_offline_build_in_netns_matches_online_digest(project, online, tmp_path):
    _ref, digest = online
    proc = ok(
        netns_cli(
            "build",
            "model.py:predict",
            "--platform",
            PLATFORM,
            "--lock",
            "ociforge.lock",
            "--offline",
            "--to",
            f"oci:{tmp_path / 'out'}:m",
            "--json",
            cwd=project,
        )
    )
    result = json.loads(proc.stdout)
    assert result["digest"] == digest
    assert result["platforms"] == [PLATFORM]


def test_offline_build_without_caches_lists_what_is_missing(project, tmp_path):
    empty = tmp_path / "empty-cache"
    lock = json.loads((project / "ociforge.lock").read_text())
    wheels = [p["filename"] for t in lock["targets"] for p in t["packages"]]
    out = tmp_path / "out"
    proc = netns_cli(
        "build",
        "model.py:predict",
        "--platform",
        PLATFORM,
        "--lock",
        "ociforge.lock",
        "--offline",
        "--to",
        f"oci:{out}:m",
        cwd=project,
        env={"OCIFORGE_CACHE": str(empty)},
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    for name in wheels:  # every locked wheel is named, not just the first one looked at
        assert f"wheel {name} (sha256 " in err
    assert "python3.11-minimal_" in err and ".deb (sha256 " in err  # the base's packages too
    assert "ociforge fetch --platform linux/amd64 --lock ociforge.lock" in err
    assert "Traceback" not in err
    assert not out.exists(), image_dirs(out)
    assert not (empty / "blobs").exists() or not any((empty / "blobs").rglob("*-*"))


def test_offline_build_without_lock_names_the_lock(project, tmp_path):
    """No lock and no resolution remembered for these requirements: a failure at once, naming
    what is missing and the fetch command, with nothing written and nothing resolved."""
    blobs = Path(os.environ["OCIFORGE_CACHE"]) / "blobs" / "sha256"
    before = sorted(os.listdir(blobs))
    proc = netns_cli(
        "build", "model.py:predict", "--platform", PLATFORM,
        "--requirement", "ociforge-test-never-resolved==1.0",
        "--offline", "--to", f"oci:{tmp_path / 'out'}:m", cwd=project,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "a lock file, or a resolution of these requirements for linux/amd64 (cpu)" in proc.stderr
    assert "ociforge-test-never-resolved==1.0" in proc.stderr
    assert "ociforge fetch --platform linux/amd64 -r requirements.txt --lock" in proc.stderr
    assert "Traceback" not in proc.stderr and "resolve" not in proc.stderr.split("offline:")[0]
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(blobs)) == before  # no layer written


def test_offline_right_after_an_online_build_needs_no_lock(project, tmp_path):
    """An online build with no lock file resolves and remembers; the same build offline, with
    no lock, installs that resolution however old it is (offline it never expires) and gives the
    online build's digest."""
    online = ok(
        run_cli(
            "build", "model.py:predict", "--platform", PLATFORM,
            "--to", f"oci:{tmp_path / 'online'}:m", "--json", cwd=project,
        )
    )  # fmt: skip
    digest = json.loads(online.stdout)["digest"]
    for memo in (Path(os.environ["OCIFORGE_CACHE"]) / "resolutions").glob("*.json"):
        os.utime(memo, (86400, 86400))  # remembered long ago: far past any TTL
    proc = ok(
        netns_cli(
            "build", "model.py:predict", "--platform", PLATFORM, "--offline",
            "--to", f"oci:{tmp_path / 'offline'}:m", "--json", cwd=project,
            env={"OCIFORGE_RESOLVE_TTL": "60"},
        )
    )  # fmt: skip
    assert json.loads(proc.stdout)["digest"] == digest


def test_debian_mirror_named_once_in_the_environment(tmp_path, cli):
    """OCIFORGE_DEBIAN_MIRROR, named once in the environment, is where the base's .debs come
    from (the PyPI side is pip's own configuration: PIP_INDEX_URL or pip.conf)."""
    (tmp_path / "model.py").write_text("def predict(x):\n    return x\n")
    env = {
        "OCIFORGE_CACHE": str(tmp_path / "cache"),
        "OCIFORGE_DEBIAN_MIRROR": f"file://{tmp_path}/debian-mirror",
    }
    proc = cli("fetch", "--platform", PLATFORM, "--lock", "x.lock", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert f"{tmp_path}/debian-mirror/pool/" in proc.stderr  # the first .deb, from that mirror
    assert not (tmp_path / "x.lock").exists()
