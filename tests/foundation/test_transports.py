"""Every output read back by real tools (skopeo, umoci, podman) and by ociforge itself."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ociforge.builder.assemble import Addition, assemble
from ociforge.errors import DigestMismatch, InvalidInput
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.image import ConfigChanges, Image, ImageIndex
from ociforge.transports.transport import open_source, write_to


@pytest.fixture
def src_tree(tmp_path):
    root = tmp_path / "src"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o750)
    (root / "data.txt").write_text("hello\n")
    os.symlink("data.txt", root / "alias.txt")
    os.link(root / "data.txt", root / "bin" / "data-again.txt")
    return root


@pytest.fixture
def multi(tmp_path, src_tree):
    store = BlobStore(tmp_path / "cache")
    changes = ConfigChanges(
        entrypoint=["/app/bin/tool"], env={"MODE": "test"}, exposed_ports=["8080"], user="65532"
    )
    return assemble(
        None,
        [Addition(str(src_tree), "/app")],
        platforms=["linux/amd64", "linux/arm64"],
        changes=changes,
        store=store,
    )


def test_oci_layout_read_by_skopeo_and_umoci(tmp_path, multi, tool):
    dest = tmp_path / "layout"
    write_to(multi, f"oci:{dest}:multi")
    write_to(multi.select("linux/amd64"), f"oci:{dest}:amd64")
    raw = json.loads(tool("skopeo", "inspect", "--raw", f"oci:{dest}:multi").stdout)
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    cfg = json.loads(tool("skopeo", "inspect", "--config", f"oci:{dest}:amd64").stdout)
    assert cfg["config"]["Entrypoint"] == ["/app/bin/tool"]
    assert cfg["architecture"] == "amd64"
    bundle = tmp_path / "bundle"
    tool("umoci", "unpack", "--rootless", "--image", f"{dest}:amd64", bundle)
    rootfs = bundle / "rootfs" / "app"
    assert stat.S_IMODE(os.stat(rootfs / "bin" / "tool").st_mode) == 0o750
    assert os.readlink(rootfs / "alias.txt") == "data.txt"
    assert os.stat(rootfs / "data.txt").st_ino == os.stat(rootfs / "bin" / "data-again.txt").st_ino
    assert (rootfs / "data.txt").read_text() == "hello\n"
    # ociforge reads back what it wrote: the same digests
    again = open_source(f"oci:{dest}:multi")
    assert isinstance(again, ImageIndex) and again.digest == multi.digest


def test_skopeo_converts_oci_to_docker_archive_and_back(tmp_path, multi, tool):
    archive = tmp_path / "oci.tar"
    write_to(multi, f"oci-archive:{archive}:v1")
    assert json.loads(tool("skopeo", "inspect", "--raw", f"oci-archive:{archive}:v1").stdout)[
        "manifests"
    ]
    tool(
        "skopeo",
        "copy",
        f"oci-archive:{archive}:v1",
        f"docker-archive:{tmp_path / 'd.tar'}:x/y:1",
        "--override-arch",
        "arm64",
    )
    tool("skopeo", "copy", f"docker-archive:{tmp_path / 'd.tar'}", f"oci:{tmp_path / 'back'}:b")
    back = open_source(f"oci:{tmp_path / 'back'}:b")
    assert back.config.diff_ids == multi.select("linux/arm64").config.diff_ids
    # ociforge reads skopeo's docker-archive too
    img = open_source(f"docker-archive:{tmp_path / 'd.tar'}")
    assert img.platform.architecture == "arm64"
    assert img.config.config.entrypoint == ("/app/bin/tool",)


def test_docker_archive_loads_into_podman(tmp_path, multi, tool, podman):
    archive = tmp_path / "img.tar"
    write_to(multi, f"docker-archive:{archive}:ociforge-test/app:v1", platform="linux/arm64")
    cfg = json.loads(tool("skopeo", "inspect", "--config", f"docker-archive:{archive}").stdout)
    assert cfg["architecture"] == "arm64"
    common = podman
    out = tool(*common, "load", "-i", archive).stdout
    assert "ociforge-test/app:v1" in out
    info = json.loads(tool(*common, "image", "inspect", "ociforge-test/app:v1").stdout)[0]
    assert info["Architecture"] == "arm64"
    assert info["Config"]["Entrypoint"] == ["/app/bin/tool"]
    assert "MODE=test" in info["Config"]["Env"]
    again = open_source(f"docker-archive:{archive}:ociforge-test/app:v1")
    assert again.config.diff_ids == multi.select("linux/arm64").config.diff_ids


def test_docker_archive_needs_a_platform_for_an_index(tmp_path, multi):
    with pytest.raises(InvalidInput, match="one platform"):
        write_to(multi, f"docker-archive:{tmp_path / 'x.tar'}")
    assert not (tmp_path / "x.tar").exists()


def test_several_tags_share_blobs(tmp_path, multi):
    dest = tmp_path / "layout"
    write_to(multi, f"oci:{dest}:a")
    count = len(list((dest / "blobs" / "sha256").iterdir()))
    write_to(multi, f"oci:{dest}:b")
    assert len(list((dest / "blobs" / "sha256").iterdir())) == count
    index = json.loads((dest / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "a",
        "b",
    ]
    archive = tmp_path / "a.tar"
    write_to(multi, f"oci-archive:{archive}:one")
    write_to(multi.select("linux/amd64"), f"oci-archive:{archive}:two")
    assert isinstance(open_source(f"oci-archive:{archive}:one"), ImageIndex)
    assert isinstance(open_source(f"oci-archive:{archive}:two"), Image)


class _Broken:
    """A blob source that fails after some blobs, standing in for a dropped connection."""

    def __init__(self, inner, fail_digest):
        self.inner, self.fail_digest = inner, fail_digest

    def open_blob(self, desc):
        if desc.digest == self.fail_digest:
            raise OSError("connection reset")
        return self.inner.open_blob(desc)


def test_failed_write_keeps_previous_content(tmp_path, multi, src_tree):
    dest = tmp_path / "layout"
    write_to(multi, f"oci:{dest}:v1")
    before = (dest / "index.json").read_bytes()
    archive = tmp_path / "a.tar"
    write_to(multi, f"oci-archive:{archive}:v1")
    archive_before = archive.read_bytes()
    (src_tree / "data.txt").write_text("changed\n")
    newer = assemble(
        None,
        [Addition(str(src_tree), "/app")],
        platforms=["linux/amd64"],
        store=BlobStore(tmp_path / "c2"),
    )
    broken = Image(
        newer.raw_manifest, newer.raw_config, _Broken(newer.source, newer.layers[-1].digest)
    )
    for spec in (f"oci:{dest}:v1", f"oci-archive:{archive}:v1"):
        with pytest.raises(OSError, match="connection reset"):
            write_to(broken, spec)
    assert (dest / "index.json").read_bytes() == before
    assert archive.read_bytes() == archive_before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_corrupt_blob_is_refused(tmp_path, multi):
    dest = tmp_path / "layout"
    write_to(multi.select("linux/amd64"), f"oci:{dest}:v1")
    img = open_source(f"oci:{dest}:v1")
    blob = dest / "blobs" / "sha256" / img.layers[0].digest.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch):
        write_to(img, f"oci:{tmp_path / 'copy'}:v1")
    assert not list(
        (tmp_path / "copy" / "blobs" / "sha256").glob(img.layers[0].digest.split(":")[1])
    )
