"""Bundles across an air gap: exported from registry A, imported into registry B (the closed
side) with the same index digest, read by skopeo, re-imported with no blob bytes sent; rebuilt on
the closed side from the bundle alone in a network namespace with only loopback and a registry
started inside it; refused, with nothing pushed, when one byte of a blob changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.airgap.conftest import ok
from tests.conftest import ROOT
from tests.support.registry import RegistryServer


def test_manifest_lists_images_and_inputs_with_digests(bundle, online):
    _path, manifest = bundle
    ref, digest = online
    assert manifest["images"][0]["reference"] == ref
    assert manifest["images"][0]["digest"] == digest
    kinds = {f["kind"] for f in manifest["files"]}
    assert kinds == {"lock", "wheel", "deb"}
    assert all(f["digest"].startswith("sha256:") for f in manifest["files"])
    layers = manifest["rebuild"]["layers"][0]
    assert layers["platform"] == "linux/amd64" and layers["model"].startswith("sha256:")


def test_import_into_second_registry_keeps_digest_and_resends_nothing(
    bundle, online, cli, tool, tmp_path
):
    path, _m = bundle
    _ref, digest = online
    with RegistryServer(tmp_path, mode="http") as reg_b:
        args = ["bundle", "import", path, "--to-registry", reg_b.host, "--prefix", "closed"]
        first = json.loads(ok(cli(*args, "--json")).stdout)["images"][0]
        assert first["reference"] == f"{reg_b.host}/closed/models/m:1"
        assert first["digest"] == digest
        assert first["bytes_uploaded"] > 0
        raw = tool(
            "skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{first['reference']}"
        ).stdout.encode()
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
        info = json.loads(
            tool("skopeo", "inspect", "--tls-verify=false", f"docker://{first['reference']}").stdout
        )
        assert info["Architecture"] == "amd64"
        again = json.loads(ok(cli(*args, "--json")).stdout)["images"][0]
        assert again["digest"] == digest
        assert again["bytes_uploaded"] == 0 and again["blobs_pushed"] == 0


CLOSED_SIDE = r"""
import json, os, subprocess, sys
from pathlib import Path
from tests.support.registry import RegistryServer

bundle, work = sys.argv[1], Path(sys.argv[2])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
env = {**os.environ, "OCIFORGE_CACHE": str(work / "closed-cache")}  # nothing from the other side

def cli(*args):
    p = subprocess.run([sys.executable, "-m", "ociforge", *args], capture_output=True, text=True,
                       env=env)
    if p.returncode:
        sys.exit(f"ociforge {' '.join(args)} exited {p.returncode}: {p.stderr[-3000:]}")
    return json.loads(p.stdout)

with RegistryServer(work, mode="http") as reg:
    imported = cli("bundle", "import", bundle, "--to-registry", reg.host, "--json")["images"][0]
    rebuilt = cli("bundle", "rebuild", bundle, "--to", reg.ref("closed/m:rebuilt"), "--json")
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                          "docker://" + reg.ref("closed/m:rebuilt")],
                         capture_output=True, check=True).stdout
print(json.dumps({"links": links, "imported": imported, "rebuilt": rebuilt,
                  "raw_sha256": __import__("hashlib").sha256(raw).hexdigest()}))
"""


def test_rebuild_on_closed_side_from_bundle_alone(bundle, online, tmp_path):
    path, _m = bundle
    _ref, digest = online
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", CLOSED_SIDE, str(path), str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [line.split(":")[1].strip() for line in out["links"].splitlines()] == ["lo"]
    assert out["imported"]["digest"] == digest
    assert out["rebuilt"]["digest"] == digest
    assert "sha256:" + out["raw_sha256"] == digest
    # the closed side's cache was filled from the bundle alone: the wheels and .debs it carried
    assert any((tmp_path / "closed-cache" / "wheels").rglob("*.whl"))
    assert any((tmp_path / "closed-cache" / "debs").glob("*.deb"))


def _tamper(src: Path, dest: Path, skip: set[str]) -> str:
    """Copy the bundle and change one byte in the middle of its largest image layer."""
    with tarfile.open(src) as tf:
        members = [
            m for m in tf.getmembers() if m.name.startswith("blobs/sha256/") and m.size > 1000
        ]
    m = max(
        (m for m in members if "sha256:" + m.name.rsplit("/", 1)[1] not in skip),
        key=lambda m: m.size,
    )
    data = bytearray(src.read_bytes())
    data[m.offset_data + m.size // 2] ^= 0x01
    dest.write_bytes(bytes(data))
    return "sha256:" + m.name.rsplit("/", 1)[1]


def test_tampered_bundle_is_refused_and_nothing_pushed(bundle, cli, tmp_path):
    path, manifest = bundle
    inputs = {f["digest"] for f in manifest["files"]}
    bad = tmp_path / "bad.tar"
    changed = _tamper(path, bad, inputs)
    with RegistryServer(tmp_path, mode="http") as reg_c:
        proc = cli("bundle", "import", bad, "--to-registry", reg_c.host, "--json")
        assert proc.returncode == 2, proc.stdout
        assert changed in proc.stderr
        assert "Traceback" not in proc.stderr
        assert reg_c.blob_digests() == set()
        assert not (reg_c.storage / "docker" / "registry" / "v2" / "repositories").exists()


def test_tampered_wheel_is_refused_on_rebuild(bundle, cli, tmp_path):
    path, manifest = bundle
    wheel = next(f for f in manifest["files"] if f["kind"] == "wheel" and f["size"] > 1000)
    others = {f["digest"] for f in manifest["files"]} - {wheel["digest"]}
    bad = tmp_path / "bad.tar"
    with tarfile.open(path) as tf:
        m = tf.getmember("blobs/" + wheel["digest"].replace(":", "/"))
    data = bytearray(path.read_bytes())
    data[m.offset_data + m.size // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    assert others  # the bundle holds more than this wheel
    proc = cli(
        "bundle",
        "rebuild",
        bad,
        "--to",
        f"oci:{tmp_path / 'out'}:m",
        env={"OCIFORGE_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2
    assert wheel["digest"] in proc.stderr and wheel["name"] in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "wheels").exists() or not any(
        (tmp_path / "cache" / "wheels").rglob("*.whl")
    )


@pytest.mark.parametrize("prefix", ["", "mirror/team"])
def test_target_reference_rewrites(prefix):
    from ociforge.airgap.bundle import BundleImage, target_reference

    e = BundleImage("t", "a.example/models/m:1", "models/m", "1", "sha256:" + "0" * 64)
    want = f"reg.internal:5000/{prefix + '/' if prefix else ''}models/m:1"
    assert target_reference(e, "reg.internal:5000", prefix) == want
    assert target_reference(e, "docker://reg.internal:5000/", prefix + "/") == want
