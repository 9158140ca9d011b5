"""Bundles across an air gap: exported from registry A, imported into registry B (the closed
side) with the same index digest, read by skopeo, re-imported with no blob bytes sent; rebuilt on
the closed side from the bundle alone in a network namespace with only loopback and a registry
started inside it; refused, with nothing pushed, when one byte of a blob changed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
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

bundle, work, image_digest = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
bundle_digest = "sha256:" + __import__("hashlib").sha256(Path(bundle).read_bytes()).hexdigest()
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
    imported = cli("bundle", "import", bundle, "--to-registry", reg.host, "--json",
                   "--expect-digest", bundle_digest)["images"][0]
    # the image's digest vouches for the image: the rebuild must give it again to be written
    rebuilt = cli("bundle", "rebuild", bundle, "--to", reg.ref("closed/m:rebuilt"), "--json",
                  "--expect-digest", image_digest)
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
        ["unshare", "-n", sys.executable, "-c", CLOSED_SIDE, str(path), str(tmp_path), digest],
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


# ---------------------------------------------------------------------------------------------
# Hostile bundles: crafted here (every blob hashes to its name, as an attacker's would), so that
# `bundle verify` has nothing to object to in the hashes; the rebuild must still never write
# outside its work folder, and verify must refuse what the rebuild would refuse.

MODEL = "opt/ociforge/model"


def _layer(*members: tuple) -> bytes:
    """An uncompressed tar layer of ``(name, kind, value, mode)`` members, in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, value, *mode in members:
            ti = tarfile.TarInfo(name)
            ti.mode = mode[0] if mode else 0o644
            data = None
            if kind == "file":
                ti.size, data = len(value), io.BytesIO(value)
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            else:
                ti.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                ti.linkname = value
            tf.addfile(ti, data)
    return buf.getvalue()


def _model_files(*more: tuple) -> bytes:
    card = json.dumps({"name": "m", "version": "1", "build": {"gpu": "cpu"}}).encode()
    return _layer(
        (f"{MODEL}/model.json", "file", card), (f"{MODEL}/model.pkl", "file", b"\x80\x04N."), *more
    )


def craft_bundle(path: Path, layers: list[tuple[str, bytes]]) -> tuple[Path, str]:
    """A bundle of one model image whose layers are ``(history name, tar)``, with a lock as its
    rebuild input. Returns the path and the image's digest."""
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **put(t)} for _n, t in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
        "history": [{"created_by": n} for n, _t in layers],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(_js(config))},
        "layers": descs,
        "annotations": {"org.opencontainers.image.base.name": "ociforge-base:python3.11"},
    }
    man = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(_js(manifest))}
    man["annotations"] = {"org.opencontainers.image.ref.name": "m"}
    lock = put(_js({"lock-version": 1, "targets": []}))["digest"]
    files = {
        "oci-layout": _js({"imageLayoutVersion": "1.0.0"}),
        "index.json": _js({"schemaVersion": 2, "manifests": [man]}),
        "ociforge-bundle.json": _js(
            {
                "format": 1,
                "kind": "ociforge-bundle",
                "images": [
                    {
                        "tag": "m",
                        "reference": "registry.example/models/m:1",
                        "repository": "models/m",
                        "ref_tag": "1",
                        "digest": man["digest"],
                    }
                ],
                "files": [{"kind": "lock", "name": "ociforge.lock", "digest": lock}],
                "rebuild": {"lock": lock, "bases": {}, "layers": []},
            }
        ),
    }
    files.update({"blobs/sha256/" + d.split(":")[1]: b for d, b in blobs.items()})
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path, man["digest"]


def _js(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture
def hostile(tmp_path):
    """A sentinel folder outside everything the rebuild may touch, and a rebuild run with its
    scratch folder (TMPDIR) and cache beside it, so a relative escape has a known target."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "victim").write_text("original")
    (tmp_path / "tmp").mkdir()
    env = {"TMPDIR": str(tmp_path / "tmp"), "OCIFORGE_CACHE": str(tmp_path / "cache")}

    def run(cli, *args):
        return cli(*map(str, args), env=env)

    def untouched():
        assert sorted(p.name for p in sentinel.iterdir()) == ["victim"]
        assert (sentinel / "victim").read_text() == "original"
        assert list((tmp_path / "tmp").iterdir()) == []  # the scratch folder is gone too

    return tmp_path, sentinel, run, untouched


# the rebuild unpacks the model into TMPDIR/ociforge-rebuild-XXXX/package: three levels up is
# tmp_path, where the sentinel is
UP = "../../.."

HOSTILE_MODELS = {
    "symlink-dir-then-file": (
        ("opt/ociforge/model/evil", "sym", f"{UP}/sentinel"),
        ("opt/ociforge/model/evil/planted", "file", b"owned"),
        "opt/ociforge/model/evil/planted",
    ),
    "absolute-symlink-then-file": (
        ("opt/ociforge/model/evil", "sym", "SENTINEL"),
        ("opt/ociforge/model/evil/victim", "file", b"owned"),
        "opt/ociforge/model/evil",
    ),
    "hardlink-out-then-overwrite": (
        ("opt/ociforge/model/h", "link", f"opt/ociforge/model/{UP}/sentinel/victim"),
        ("opt/ociforge/model/h", "file", b"owned"),
        "opt/ociforge/model/h",
    ),
    "duplicate-over-symlink": (
        ("opt/ociforge/model/v", "sym", f"{UP}/sentinel/victim"),
        ("opt/ociforge/model/v", "file", b"owned"),
        "opt/ociforge/model/v",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MODELS))
def test_hostile_model_layer_writes_nothing_outside(cli, hostile, case):
    tmp_path, sentinel, run, untouched = hostile
    first, second, member = HOSTILE_MODELS[case]
    first = tuple(str(sentinel) if v == "SENTINEL" else v for v in first)
    path, _d = craft_bundle(tmp_path / "b.tar", [("model", _model_files(first, second))])
    proc = run(cli, "bundle", "rebuild", path, "--to", f"oci:{tmp_path / 'out'}:m")
    assert proc.returncode == 2, proc.stderr
    assert repr(member) in proc.stderr and "refused" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    untouched()
    assert not (tmp_path / "out").exists()
    # verify reads the same layers with the same checks: the hashes are right, the bundle is not
    proc = run(cli, "bundle", "verify", path)
    assert proc.returncode == 2 and repr(member) in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", [f"{UP}/sentinel/planted", "/SENTINEL/planted", "./w", "a//b"])
def test_artifact_names_from_history_must_be_plain_paths(cli, hostile, name):
    """``artifact NAME`` in the config's history names where the rebuild puts an artifact: an
    absolute or ``..`` name wrote where it pointed. ociforge writes them normalized; anything
    else is a crafted bundle."""
    tmp_path, sentinel, run, untouched = hostile
    name = name.replace("/SENTINEL", str(sentinel))
    art = _layer((f"opt/ociforge/app/{name}", "file", b"owned"))
    path, _d = craft_bundle(
        tmp_path / "b.tar", [("model", _model_files()), (f"artifact {name}", art)]
    )
    proc = run(cli, "bundle", "rebuild", path, "--to", f"oci:{tmp_path / 'out'}:m")
    assert proc.returncode == 2, proc.stderr
    assert repr(name) in proc.stderr and "refused" in proc.stderr, proc.stderr
    untouched()
    assert not (tmp_path / "planted").exists()


def test_rebuild_limits_members_and_bytes(cli, hostile):
    tmp_path, _s, run, untouched = hostile
    many = _model_files(*[(f"{MODEL}/f{i}", "file", b"") for i in range(20)])
    path, _d = craft_bundle(tmp_path / "many.tar", [("model", many)])
    out = f"oci:{tmp_path / 'out'}:m"
    proc = run(cli, "bundle", "rebuild", path, "--to", out, "--max-members", "10")
    assert proc.returncode == 2 and f"'{MODEL}/f8'" in proc.stderr, proc.stderr  # the 11th
    assert "10 members" in proc.stderr
    big = _model_files((f"{MODEL}/big", "file", b"x" * 5000))
    path, _d = craft_bundle(tmp_path / "big.tar", [("model", big)])
    proc = run(cli, "bundle", "rebuild", path, "--to", out, "--max-bytes", "4096")
    assert proc.returncode == 2 and f"'{MODEL}/big'" in proc.stderr, proc.stderr
    assert "4096 bytes" in proc.stderr
    proc = run(cli, "bundle", "verify", path, "--max-bytes", "4096")
    assert proc.returncode == 2 and f"'{MODEL}/big'" in proc.stderr, proc.stderr
    untouched()


def test_setuid_bits_from_a_bundle_are_dropped(tmp_path):
    """What the rebuild unpacks keeps the file's permissions, never setuid/setgid/sticky."""
    from ociforge.airgap import bundle as b

    layer = _model_files((f"{MODEL}/tool", "file", b"#!/bin/sh\n", 0o6755))
    path, _d = craft_bundle(tmp_path / "b.tar", [("model", layer)])
    bundle = b.Bundle(path)
    img = bundle.image(bundle.images[0])
    (_label, desc, prefix), *_rest = b._unpacked_layers(img, path)
    b._extract(img, desc, prefix, tmp_path / "pkg", b.Limits(), "test")
    assert stat.S_IMODE((tmp_path / "pkg" / "tool").stat().st_mode) == 0o755


# ---------------------------------------------------------------------------------------------
# Where a bundle came from: export prints its sha256; import and rebuild refuse any other


def test_export_prints_the_bundle_digest(cli, tmp_path):
    src, _d = craft_bundle(tmp_path / "src.tar", [("model", _model_files())])
    out = tmp_path / "out.bundle"
    proc = ok(cli("bundle", "export", f"oci-archive:{src}:m", "-o", out))
    want = "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"bundle {want}" in proc.stdout
    again = tmp_path / "again.bundle"
    assert (
        json.loads(
            ok(cli("bundle", "export", f"oci-archive:{src}:m", "-o", again, "--json")).stdout
        )["bundle_digest"]
        == want
    )


def test_import_with_another_expected_digest_pushes_nothing(cli, tmp_path):
    path, image_digest = craft_bundle(tmp_path / "b.tar", [("model", _model_files())])
    bundle_digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    other = "sha256:" + "ab" * 32
    with RegistryServer(tmp_path, mode="http") as reg:
        args = ["bundle", "import", path, "--to-registry", reg.host, "--json"]
        proc = cli(*args, "--expect-digest", other)
        assert proc.returncode == 2, proc.stdout
        assert "is not the bundle expected" in proc.stderr and bundle_digest in proc.stderr
        assert reg.blob_digests() == set()
        assert not (reg.storage / "docker" / "registry" / "v2" / "repositories").exists()
        proc = cli("bundle", "rebuild", path, "--to", reg.ref("m:r"), "--expect-digest", other)
        assert proc.returncode == 2 and "is not the bundle expected" in proc.stderr
        assert reg.blob_digests() == set()
        # the bundle's own digest, or its image's, lets it in
        for expect in (bundle_digest, image_digest, image_digest.split(":")[1].upper()):
            pushed = json.loads(ok(cli(*args, "--expect-digest", expect)).stdout)["images"]
            assert [p["digest"] for p in pushed] == [image_digest]
