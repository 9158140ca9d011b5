"""Unpacking an image's layers for ``ociforge run`` (``ociforge.run.rootfs``): layers stack as a
container engine stacks them (whiteouts, opaque folders, symlinked folders followed inside the
tree), a hostile layer is refused by name with nothing written outside and no cache entry left,
and the image's config is read against its own tree (users from its /etc/passwd, never through
a link out of it)."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from ociforge.errors import DigestMismatch, InvalidInput
from ociforge.oci import mediatypes as mt
from ociforge.oci.digest import of_bytes
from ociforge.oci.image import ConfigChanges, append
from ociforge.oci.layer import Layer
from ociforge.oci.manifest import Descriptor
from ociforge.oci.platform import Platform
from ociforge.oci.untar import UnsafeArchive
from ociforge.run import launch, rootfs
from ociforge.run.sandbox import Sandbox


def tar(*members: tuple) -> bytes:
    """An uncompressed tar of ``(name, kind, value[, mode])``: kind file (value: bytes), dir,
    sym (value: target), link (value: target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, value, *rest in members:
            ti = tarfile.TarInfo(name)
            ti.mode = rest[0] if rest else (0o755 if kind == "dir" else 0o644)
            data = None
            if kind == "file":
                ti.size, data = len(value), io.BytesIO(value)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, value
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, value
            tf.addfile(ti, data)
    return buf.getvalue()


class _Blobs:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def open_blob(self, desc):
        return io.BytesIO(self.blobs[desc.digest])


def image_of(*layers: bytes, user: str = "", served: dict[str, bytes] | None = None):
    """A linux/amd64 image of these uncompressed layers (``served`` replaces a blob's bytes)."""
    blobs = {of_bytes(t): t for t in layers}
    descs = [Layer(Descriptor(mt.OCI_LAYER, of_bytes(t), len(t)), of_bytes(t)) for t in layers]
    source = _Blobs({**blobs, **(served or {})})
    changes = ConfigChanges(user=user, entrypoint=["python3"], cmd=["-V"]) if user else None
    return append(None, descs, source, platform=Platform.parse("linux/amd64"), changes=changes)


@pytest.fixture
def sentinel(tmp_path):
    """A folder beside the tree that must stay as it was; returns a checker."""
    folder = tmp_path / "sentinel"
    folder.mkdir()
    (folder / "victim").write_text("original")

    def untouched() -> None:
        assert sorted(p.name for p in folder.iterdir()) == ["victim"]
        assert (folder / "victim").read_text() == "original"

    return untouched


def test_layers_stack_like_a_container_engine(tmp_path, sentinel):
    lower = tar(
        ("usr/lib", "dir", None),
        ("usr/lib/a.so", "file", b"a"),
        ("lib", "sym", "usr/lib"),  # a merged /usr
        ("run", "dir", None),
        ("var", "dir", None),
        ("var/run", "sym", "/run"),  # absolute: the image's /run, not the host's
        ("etc", "dir", None),
        ("etc/keep", "file", b"old"),
        ("etc/gone", "file", b"x"),
        ("opt/d", "dir", None, 0o555),
        ("opt/d/x", "file", b"x"),
        ("opt/d/sub/y", "file", b"y"),
        ("tmp", "dir", None, 0o1777),
        ("escape", "sym", "../sentinel/victim"),  # a dangling-outside link: made, never followed
        ("w/deep", "dir", None, 0o700),
    )
    upper = tar(
        ("lib/b.so", "file", b"b"),  # through lib -> usr/lib
        ("var/run/app.pid", "file", b"1"),  # through /run, inside the tree
        ("etc/keep", "file", b"new"),
        ("etc/.wh.gone", "file", b""),
        ("opt/d/z", "file", b"z"),  # the same layer as the opaque marker: kept
        ("opt/d/.wh..wh..opq", "file", b""),
        ("usr/lib/b2.so", "link", "usr/lib/b.so"),
        ("usr/bin/su", "file", b"#!", 0o4755),
        ("escape", "file", b"replaced"),  # replaces the link, not what it points at
        ("w/.wh.deep", "file", b""),
    )
    top = tar(("w/deep/f", "file", b"f"))  # a new folder where a removed one was: not its mode
    root = rootfs.unpack(image_of(lower, upper, top), tmp_path / "tree")
    assert (root / "usr/lib/b.so").read_bytes() == b"b"
    assert os.readlink(root / "lib") == "usr/lib"
    assert (root / "run/app.pid").read_bytes() == b"1"
    assert (root / "etc/keep").read_bytes() == b"new" and not (root / "etc/gone").exists()
    assert sorted(p.name for p in (root / "opt/d").iterdir()) == ["z"]
    assert stat.S_IMODE((root / "opt/d").stat().st_mode) == 0o555
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "usr/lib/b2.so").stat().st_ino == (root / "usr/lib/b.so").stat().st_ino
    assert stat.S_IMODE((root / "usr/bin/su").stat().st_mode) == 0o755  # no setuid in a cache
    assert (root / "escape").read_bytes() == b"replaced" and not (root / "escape").is_symlink()
    assert stat.S_IMODE((root / "w/deep").stat().st_mode) == 0o755
    assert (root / "proc").is_dir() and (root / "dev").is_dir()  # bubblewrap's mount points
    sentinel()
    rootfs.remove_tree(root)
    assert not root.exists()


HOSTILE = {
    "dotdot": [tar(("../sentinel/victim", "file", b"pwned"))],
    "symlink-climb": [tar(("up", "sym", "../.."), ("up/sentinel/victim", "file", b"pwned"))],
    "symlink-then-file": [tar(("a", "sym", "b/../../.."), ("a/victim", "file", b"pwned"))],
    "link-from-a-lower-layer": [
        tar(("ln", "sym", "../sentinel")),
        tar(("ln/victim", "file", b"pwned")),
    ],
    "hardlink-out": [tar(("h", "link", "../sentinel/victim"))],
    "hardlink-to-a-symlink": [tar(("s", "sym", "/etc/passwd"), ("h", "link", "s"))],
}


@pytest.mark.parametrize("layers", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_layers_are_refused_and_leave_no_cache_entry(tmp_path, sentinel, layers):
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeArchive) as err:
        rootfs.cached(image_of(*layers), cache)
    assert "refused" in str(err.value)
    sentinel()
    assert os.listdir(cache / "rootfs") == []  # no tree, no .partial, no lock


def test_absolute_symlinks_resolve_inside_the_tree(tmp_path, sentinel):
    target = str(tmp_path / "sentinel")  # the host path, as an absolute link inside the image
    layer = tar(("in", "sym", target), ("in/victim", "file", b"inside"))
    root = rootfs.unpack(image_of(layer), tmp_path / "tree")
    assert (root / target.lstrip("/") / "victim").read_bytes() == b"inside"
    sentinel()


def test_a_layer_that_does_not_match_its_digest_leaves_no_cache_entry(tmp_path):
    good = tar(("etc/x", "file", b"good"))
    bad = tar(("etc/x", "file", b"evil"))
    with pytest.raises(DigestMismatch):
        rootfs.cached(image_of(good, served={of_bytes(good): bad}), tmp_path / "cache")
    assert os.listdir(tmp_path / "cache" / "rootfs") == []


def test_cached_tree_is_unpacked_once(tmp_path, monkeypatch):
    image = image_of(tar(("etc/x", "file", b"1")))
    first = rootfs.cached(image, tmp_path / "cache")
    assert first.name == image.digest.split(":")[1] and (first / "etc/x").read_bytes() == b"1"
    monkeypatch.setattr(rootfs, "unpack", lambda *a, **k: pytest.fail("unpacked again"))
    assert rootfs.cached(image, tmp_path / "cache") == first
    assert sorted(os.listdir(tmp_path / "cache" / "rootfs")) == [first.name]


def test_a_killed_unpack_is_not_used(tmp_path):
    image = image_of(tar(("etc/x", "file", b"1")))
    hexpart = image.digest.split(":")[1]
    partial = tmp_path / "cache" / "rootfs" / f"{hexpart}.partial"
    (partial / "etc").mkdir(parents=True)
    (partial / "etc" / "half").write_text("left by a killed unpack")
    root = rootfs.cached(image, tmp_path / "cache")
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["x"] and not partial.exists()


def test_the_user_comes_from_the_images_own_passwd(tmp_path):
    passwd = b"root:x:0:0:root:/root:/bin/sh\nsvc:x:1001:1002::/home/svc:/bin/sh\n"
    group = b"root:x:0:\nsvc:x:1002:\nextra:x:2000:\n"
    layer = tar(
        ("etc/passwd", "file", passwd), ("etc/group", "file", group),
        ("usr/bin/python3", "file", b"\x7fELF"),
    )  # fmt: skip
    root = rootfs.unpack(image_of(layer), tmp_path / "tree")
    assert launch.user_ids(root, "svc") == (1001, 1002, "/home/svc")
    assert launch.user_ids(root, "svc:extra") == (1001, 2000, "/home/svc")
    assert launch.user_ids(root, "1001") == (1001, 1002, "/home/svc")
    assert launch.user_ids(root, "4242:7") == (4242, 7, "/")
    assert launch.user_ids(root, "") == (0, 0, "/root")
    with pytest.raises(InvalidInput, match="'nobody' is not in its /etc/passwd"):
        launch.user_ids(root, "nobody")
    box = launch.from_image(image_of(layer, user="svc"), root, env={"A": "1"})
    assert isinstance(box, Sandbox) and (box.uid, box.gid) == (1001, 1002)
    assert box.argv == ["/usr/bin/python3", "-V"]  # found on the image's PATH, in the tree
    assert box.env["HOME"] == "/home/svc" and box.env["A"] == "1" and "PATH" in box.env


def test_passwd_linking_out_of_the_tree_is_not_read(tmp_path):
    outside = tmp_path / "host-passwd"
    outside.write_text("svc:x:4242:4242::/host:/bin/sh\n")
    for link in (str(outside), "../../../../../../../../" + str(outside).lstrip("/")):
        root = rootfs.unpack(image_of(tar(("etc/passwd", "sym", link))), tmp_path / "t" / "x")
        assert rootfs.read_inside(root, "/etc/passwd") is None
        with pytest.raises(InvalidInput):
            launch.user_ids(root, "svc")
        rootfs.remove_tree(tmp_path / "t")


def test_port_means_the_port_the_server_listens_on():
    assert launch.port_env("9000") == {"PORT": "9000"}
    assert launch.port_env("9000:9000") == {"PORT": "9000"}
    for bad in ("9000:8080", "http", "0", "70000"):
        with pytest.raises(InvalidInput, match="host's network"):
            launch.port_env(bad)


def test_sandbox_command_line(tmp_path):
    box = Sandbox(tmp_path, ["/usr/bin/python3", "-V"], Platform.parse("linux/arm64"), env={})
    cmd = box.command()
    assert cmd[:4] == ["bwrap", "--bind", str(tmp_path.resolve()), "/"]
    assert "--remount-ro" in cmd and "--share-net" in cmd and "--new-session" in cmd
    if os.uname().machine == "x86_64":  # arm64 on this host: the program under qemu-user
        tail = cmd[cmd.index("--") + 1 :]
        assert tail == ["/.qemu-static", "-0", "/usr/bin/python3", "/usr/bin/python3", "-V"]
