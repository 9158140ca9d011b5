"""Weights as artifacts, locally: what goes in which layer, determinism, bad input, the shell.

The modelcar's shell runs as KServe's sidecar runs it (``sh -c 'ln -sf ... && ls ... && sleep'``),
under bubblewrap for linux/amd64 and qemu-user for linux/arm64, in the image unpacked from the
layout ociforge wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import ociforge
from ociforge.artifacts import files as wfiles
from ociforge.artifacts.tarplan import TarPlan
from ociforge.errors import InvalidInput, NotFound, OciforgeError
from ociforge.oci.layer import Entry, decompressor, write_tar
from ociforge.transports.transport import open_source
from tests.support.rootfs import can_run, run, unpack
from tests.weights.conftest import make_model, tree_bytes


def _layer_files(img, desc) -> dict[str, bytes]:
    raw = img.open_layer(desc)
    out = {}
    try:
        with tarfile.open(fileobj=decompressor(raw, desc.media_type), mode="r|") as tf:
            for m in tf:
                if m.isfile():
                    out[m.name] = tf.extractfile(m).read()
    finally:
        raw.close()
    return out


def test_modelcar_layout(model_dir, tmp_path):
    res = ociforge.weights([model_dir], to=f"oci:{tmp_path / 'out'}:tiny")
    idx = open_source(f"oci:{tmp_path / 'out'}:tiny")
    assert sorted(str(p) for p in idx.platforms) == ["linux/amd64", "linux/arm64"]
    amd, arm = idx.select("linux/amd64"), idx.select("linux/arm64")
    # the shell differs per platform; the weights are the same blobs on both
    assert amd.layers[0].digest != arm.layers[0].digest
    assert amd.layers[1:] == arm.layers[1:]
    assert [d.digest for d in amd.layers[1:]] == [d.digest for d in res.layers]
    # the incompressible weight file: a layer of its own, uncompressed; small files: together
    big = [d for d in res.layers if d.media_type == "application/vnd.oci.image.layer.v1.tar"]
    assert len(big) == 1 and len(res.layers) == 2
    files = {}
    for d in amd.layers[1:]:
        files.update(_layer_files(amd, d))
    want = {f"models/{k}": v for k, v in tree_bytes(model_dir).items()}
    assert files == want
    assert _layer_files(amd, big[0]).keys() == {"models/model.safetensors"}
    assert amd.config.config.env_dict()["PATH"] == "/bin"


def test_same_files_same_digests_anywhere(tmp_path):
    a = make_model(tmp_path / "a" / "m")
    b = tmp_path / "elsewhere" / "m"
    shutil.copytree(a, b)
    for p in b.rglob("*"):
        os.utime(p, (12345, 67890))
    os.chmod(b / "README.md", 0o600)  # modes are normalized: readable by the modelcar's uid
    digests = {}
    for fmt in ("modelcar", "modelpack"):
        ra = ociforge.weights([a], to=f"oci:{tmp_path / fmt}-a", format=fmt)
        rb = ociforge.weights([b], to=f"oci:{tmp_path / fmt}-b", format=fmt)
        assert ra.digest == rb.digest, fmt
        digests[fmt] = ra.digest
    # and again, hashing everything anew (no remembered digests): the same
    os.environ["OCIFORGE_WEIGHTS_REHASH"] = "1"
    try:
        again = ociforge.weights([b], to=f"oci:{tmp_path / 'again'}")
    finally:
        del os.environ["OCIFORGE_WEIGHTS_REHASH"]
    assert again.digest == digests["modelcar"]


def test_tar_plan_matches_write_tar(tmp_path):
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(3 << 20) + b"tail")
    small = tmp_path / "s.json"
    small.write_text("{}")
    entries = [
        Entry("models/a/w.bin", "file", 0o644, source=str(src), size=src.stat().st_size),
        Entry("models/s.json", "file", 0o755, source=str(small), size=2),
    ]
    buf = io.BytesIO()
    write_tar(entries, buf, 1700000000)
    plan = TarPlan(entries, 1700000000)
    with plan.open() as f:
        assert f.read() == buf.getvalue()
    assert plan.measure() == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
    with plan.open() as f:  # seeking, as a resumed upload does
        f.seek(1 << 20)
        assert f.read(4096) == buf.getvalue()[1 << 20 : (1 << 20) + 4096]


def test_compressibility_is_decided_on_the_bytes(tmp_path):
    noise = tmp_path / "w.gguf"
    noise.write_bytes(os.urandom(1 << 20))
    text = tmp_path / "w.bin"
    text.write_bytes(b"0.000 " * 200000)
    assert not wfiles.compresses(noise, noise.stat().st_size)
    assert wfiles.compresses(text, text.stat().st_size)
    assert wfiles.role_of("model-00001-of-00002.safetensors") == "weight"
    assert wfiles.role_of("tokenizer.json") == "weight.config"
    assert wfiles.role_of("LICENSE") == "doc"
    assert wfiles.role_of("modeling.py") == "code"
    assert wfiles.role_of("train.parquet") == "dataset"


@pytest.mark.parametrize("fmt", ["modelcar", "modelpack"])
def test_bad_input_writes_nothing(tmp_path, model_dir, fmt):
    dest = tmp_path / "dest"
    empty = tmp_path / "empty"
    empty.mkdir()
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"x")
    escaping = make_model(tmp_path / "escaping")
    (escaping / "link.bin").symlink_to(outside)
    cases = [
        ([tmp_path / "missing"], f"oci:{dest}", NotFound, "no such file"),
        ([empty], f"oci:{dest}", InvalidInput, "holds no files"),
        ([escaping], f"oci:{dest}", InvalidInput, "outside"),
        ([model_dir], "Registry.Example/UPPER:tag", InvalidInput, "invalid image reference"),
        ([model_dir], "127.0.0.1:5000/x@sha256:12", InvalidInput, "digest"),
        ([model_dir], f"docker-archive:{dest}.tar", InvalidInput, "not docker-archive"),
        ([], f"oci:{dest}", InvalidInput, "no weights"),
    ]
    for paths, to, err, text in cases:
        with pytest.raises(err, match=text):
            ociforge.weights(paths, to=to, format=fmt)
        assert not dest.exists(), (paths, to)
        assert not Path(f"{dest}.tar").exists()
    with pytest.raises(InvalidInput, match="metadata"):
        ociforge.weights([model_dir], to=f"oci:{dest}", format=fmt, metadata={"bogus": "1"})
    with pytest.raises(InvalidInput, match="format"):
        ociforge.weights([model_dir], to=f"oci:{dest}", format="safetensors")
    assert not dest.exists()
    assert issubclass(NotFound, OciforgeError)


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ociforge",
            "weights",
            str(tmp_path / "nope"),
            "--to",
            f"oci:{tmp_path}/o",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.startswith("ociforge weights: error:") and "Traceback" not in r.stderr


def test_inspect_shows_a_modelpack_artifact(model_dir, tmp_path):
    """An artifact's config is no image config: inspect names the artifact type and each layer's
    file instead of failing on a missing architecture."""
    ociforge.weights([model_dir], to=f"oci:{tmp_path / 'p'}:pack", format="modelpack")
    r = subprocess.run(
        [sys.executable, "-m", "ociforge", "inspect", f"oci:{tmp_path / 'p'}:pack"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "application/vnd.cncf.model.manifest.v1+json" in r.stdout
    names = sorted(p.name for p in Path(model_dir).rglob("*") if p.is_file())
    assert all(name in r.stdout for name in names)
    r = subprocess.run(
        [sys.executable, "-m", "ociforge", "inspect", "--json", f"oci:{tmp_path / 'p'}:pack"],
        capture_output=True,
        text=True,
    )
    info = json.loads(r.stdout)
    assert info["platform"] == "" and info["artifactType"].startswith("application/vnd.cncf")


def test_symlink_inside_the_tree_is_followed(tmp_path):
    m = make_model(tmp_path / "m")
    (m / "alias.json").symlink_to("config.json")
    got = {f.path: f for f in wfiles.collect([m])}
    assert Path(got["alias.json"].source).read_bytes() == (m / "config.json").read_bytes()


# The ELF header of an aarch64 executable, and which of its bits binfmt_misc compares (as
# Debian's qemu-user-static registers it); the kernel decodes the \\x escapes itself.
_AARCH64_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
_AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"


def _run_arm64(root: Path, script: str) -> subprocess.CompletedProcess:
    """``/bin/sh -c script`` in ``root`` under qemu-user, as on an arm64 node.

    busybox runs ``sleep`` by exec'ing itself again, which a foreign binary can only do through
    binfmt_misc: a private binfmt_misc instance (a user namespace's own, Linux >= 6.7) registers
    qemu-aarch64-static (``F``: opened now, so it works inside the chroot; ``P``: argv[0] kept),
    nothing on the host changes.
    """
    qemu = shutil.which("qemu-aarch64-static")
    assert qemu, "qemu-user-static is part of the test environment"
    (root / "proc").mkdir(exist_ok=True)
    reg = f":ociforge-aarch64:M::{_AARCH64_MAGIC}:{_AARCH64_MASK}:{qemu}:FP"
    inner = (
        "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && "
        'printf "%s" "$REG" > /proc/sys/fs/binfmt_misc/register && '
        'mount -t proc proc "$ROOT/proc" && '
        'exec chroot "$ROOT" /bin/sh -c "$SCRIPT"'
    )
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--mount-proc",
         "/bin/sh", "-c", inner],
        env={"REG": reg, "ROOT": str(root), "SCRIPT": script, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


# What KServe's modelcar sidecar and its check run (pkg/webhook/admission/pod/), with /tmp/m
# standing in for /mnt/models.
KSERVE_SCRIPT = (
    'ln -sf /models /tmp/m && ls /tmp/m/ && [ -d /models ] && [ "$(ls -A /models)" ] && sleep 0'
)


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_modelcar_shell_runs_as_kserve_runs_it(tmp_path, model_dir, platform):
    why = can_run(platform)
    assert not why, why  # bubblewrap and qemu-user are part of the test environment
    ociforge.weights([model_dir], to=f"oci:{tmp_path / 'out'}:car")
    img = open_source(f"oci:{tmp_path / 'out'}:car", platform=platform)
    root = unpack(img, tmp_path / "rootfs")
    assert (root / "bin" / "busybox").is_file() and os.readlink(root / "bin" / "sh") == "busybox"
    # the ELF machine of the busybox binary is the platform's
    machine = (root / "bin" / "busybox").read_bytes()[18:20]
    assert machine == {"linux/amd64": b"\x3e\x00", "linux/arm64": b"\xb7\x00"}[platform]
    if platform == "linux/amd64":
        proc = run(root, ["/bin/sh", "-c", KSERVE_SCRIPT], platform, env={"PATH": "/bin"},
                   uid=1010, gid=1010)  # fmt: skip
    else:
        proc = _run_arm64(root, KSERVE_SCRIPT + " && uname -m")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split()
    if platform == "linux/arm64":
        assert out.pop() == "aarch64"
    assert out == sorted(p.name for p in model_dir.iterdir())


@pytest.mark.parametrize("fmt", ["modelcar", "modelpack"])
def test_to_an_oci_archive(tmp_path, model_dir, fmt):
    res = ociforge.weights([model_dir], to=f"oci-archive:{tmp_path / 'w.tar'}:v1", format=fmt)
    back = open_source(f"oci-archive:{tmp_path / 'w.tar'}:v1")
    assert back.digest == res.digest
    if fmt == "modelpack":
        manifest = json.loads(back.raw_manifest)
        assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    else:
        img = back.select("linux/arm64")
        files = {}
        for d in img.layers[1:]:
            files.update(_layer_files(img, d))
        assert files == {f"models/{k}": v for k, v in tree_bytes(model_dir).items()}
