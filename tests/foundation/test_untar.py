"""Unpacking tar streams from outside (``ociforge.oci.untar``): every hostile member is refused by
name and nothing is ever written outside the destination, checked against a sentinel folder
beside it; a well-formed tree (folders, files, links inside it) comes out whole, modes masked."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from ociforge.errors import InvalidInput
from ociforge.oci.untar import Limits, UnsafeArchive, extract


def tar(*members: tuple) -> io.BytesIO:
    """An uncompressed tar of ``(name, kind, value, mode)`` members, in the order given: kind is
    file (value: bytes), dir, sym (value: target), link (value: target) or fifo."""
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
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            tf.addfile(ti, data)
    buf.seek(0)
    return buf


@pytest.fixture
def place(tmp_path):
    """The destination, and a sentinel folder beside it that must stay as it was."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "victim").write_text("original")
    dest = tmp_path / "work" / "dest"

    def untouched() -> None:
        assert sorted(p.name for p in sentinel.iterdir()) == ["victim"]
        assert (sentinel / "victim").read_text() == "original"
        assert stat.S_IMODE((sentinel / "victim").stat().st_mode) == 0o644

    os.chmod(sentinel / "victim", 0o644)
    return dest, sentinel, untouched


def refused(stream, dest, member: str, **kw) -> str:
    with pytest.raises(UnsafeArchive) as e:
        extract(stream, dest, **kw)
    assert repr(member) in str(e.value), str(e.value)
    return str(e.value)


def test_a_plain_tree_comes_out_whole_with_modes_masked(place):
    dest, _s, untouched = place
    kinds = extract(
        tar(
            ("opt/app", "dir", None, 0o750),
            ("opt/app/bin", "dir", None),
            ("opt/app/bin/run", "file", b"#!/bin/sh\n", 0o4755),  # setuid: dropped
            ("opt/app/data.txt", "file", b"data", 0o2640),  # setgid: dropped
            ("opt/app/same.txt", "link", "opt/app/data.txt"),
            ("opt/app/latest", "sym", "bin/run"),
            ("opt/app/up", "sym", "bin/../data.txt"),
            ("opt/other/x", "file", b"not under the prefix"),
        ),
        dest,
        "/opt/app",
    )
    assert kinds == {
        "": "dir",
        "bin": "dir",
        "bin/run": "file",
        "data.txt": "file",
        "same.txt": "hardlink",
        "latest": "symlink",
        "up": "symlink",
    }
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750
    assert stat.S_IMODE((dest / "bin/run").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "data.txt").stat().st_mode) == 0o640
    assert (dest / "same.txt").stat().st_ino == (dest / "data.txt").stat().st_ino
    assert os.readlink(dest / "latest") == "bin/run"
    assert (dest / "up").read_text() == "data"  # '..' that stays inside is fine
    assert not (dest.parent / "opt").exists() and not (dest / "x").exists()
    untouched()


def test_a_single_file_at_the_prefix_becomes_dest(tmp_path):
    dest = tmp_path / "w" / "weights.bin"
    extract(tar(("opt/app/weights.bin", "file", b"w" * 10, 0o6644)), dest, "opt/app/weights.bin")
    assert dest.read_bytes() == b"w" * 10 and stat.S_IMODE(dest.stat().st_mode) == 0o644


def test_symlink_to_outside_then_a_file_through_it(place):
    dest, sentinel, untouched = place
    stream = tar(("evil", "sym", str(sentinel)), ("evil/victim", "file", b"owned"))
    refused(stream, dest, "evil")  # an absolute target: refused as soon as it is read
    stream = tar(("evil", "sym", "../../sentinel"), ("evil/new", "file", b"owned"))
    refused(stream, dest, "evil/new")
    untouched()


@pytest.mark.parametrize(
    "target", ["/etc/passwd", "../sentinel/victim", "a/../../x", "", "../../sentinel"]
)
def test_symlink_leading_outside_is_refused(place, target):
    dest, _s, untouched = place
    refused(tar(("a", "dir", None), ("link", "sym", target)), dest, "link")
    untouched()


def test_symlink_escaping_through_another_symlink(place):
    """Each link alone looks inside (``x`` is ``.``, ``y`` is ``x/..``: the root), together they
    reach the parent: the check follows links as the kernel does."""
    dest, _s, untouched = place
    refused(tar(("x", "sym", "."), ("y", "sym", "x/..")), dest, "y")
    refused(tar(("x", "sym", "y"), ("y", "sym", "x")), dest, "x")  # a loop
    untouched()


@pytest.mark.parametrize("target", ["/work/sentinel/victim", "../sentinel/victim", "etc/passwd"])
def test_hardlink_to_anything_but_an_earlier_file_is_refused(place, target):
    dest, sentinel, untouched = place
    target = target.replace("/work/sentinel", str(sentinel))
    refused(tar(("h", "link", target)), dest, "h")
    untouched()


def test_duplicate_member_over_a_link_is_refused(place):
    dest, sentinel, untouched = place
    # a symlink to the victim (refused at the end anyway), then a file of the same name
    refused(tar(("v", "sym", "../../sentinel/victim"), ("v", "file", b"owned")), dest, "v")
    # a hardlink to an earlier file, then a file of the same name over it
    stream = tar(("f", "file", b"one"), ("h", "link", "f"), ("h", "file", b"two"))
    refused(stream, dest, "h")
    assert (dest / "f").read_bytes() == b"one"
    # a file, then a folder member under it
    refused(tar(("f", "file", b"x"), ("f/g", "file", b"y")), dest.parent / "d2", "f/g")
    untouched()


@pytest.mark.parametrize("name", ["../victim", "a/../../sentinel/victim", "../../sentinel/x"])
def test_names_with_dotdot_are_refused(place, name):
    dest, _s, untouched = place
    refused(tar((name, "file", b"owned")), dest, name)
    untouched()


def test_absolute_names_stay_inside(place):
    dest, sentinel, untouched = place
    extract(tar((f"{sentinel}/victim", "file", b"inside")), dest)
    assert (dest / str(sentinel).lstrip("/") / "victim").read_bytes() == b"inside"
    untouched()


def test_special_files_are_refused(place):
    dest, _s, untouched = place
    refused(tar(("fifo", "fifo", None)), dest, "fifo")
    untouched()


def test_member_and_byte_limits(place):
    dest, _s, untouched = place
    many = tar(*[(f"f{i}", "file", b"") for i in range(11)])
    msg = refused(many, dest, "f10", limits=Limits(max_members=10))
    assert "10 members" in msg
    big = tar(("a", "file", b"x" * 600), ("b", "file", b"x" * 600))
    msg = refused(big, dest.parent / "d2", "b", limits=Limits(max_bytes=1000))
    assert "1000 bytes" in msg and not (dest.parent / "d2" / "b").exists()
    # one Limits spans several streams
    lim = Limits(max_members=3)
    extract(tar(("a", "file", b""), ("b", "file", b"")), dest.parent / "d3", limits=lim)
    refused(tar(("c", "file", b""), ("d", "file", b"")), dest.parent / "d4", "d", limits=lim)
    untouched()


def test_check_only_writes_nothing_and_refuses_the_same(tmp_path):
    extract(tar(("a", "dir", None), ("a/b", "file", b"x"), ("a/c", "sym", "b")), None)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnsafeArchive, match="'evil'"):
        extract(tar(("evil", "sym", "/etc")), None)
    with pytest.raises(UnsafeArchive, match="'y'"):
        extract(tar(("x", "sym", "."), ("y", "sym", "x/..")), None)


def test_damaged_streams_are_errors_of_ours(tmp_path):
    whole = tar(("a", "file", b"x" * 5000)).getvalue()
    for data in (b"not a tar at all" * 64, whole[:1000], whole[:512] + b"\xff" * 600):
        with pytest.raises(InvalidInput):
            extract(io.BytesIO(data), tmp_path / "d")


def test_nothing_is_opened_through_a_symlink_already_there(tmp_path):
    """Defense in depth: a link that is in the destination before (not made by the stream) is
    not followed either."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(sentinel)
    with pytest.raises(InvalidInput):
        extract(tar(("sub/x", "file", b"owned")), dest)
    assert list(sentinel.iterdir()) == []
    Path(dest / "sub").unlink()


def test_names_past_path_max_are_refused(place):
    """A name of a million components would cost memory to check: refused before that."""
    dest, _s, untouched = place
    long = "/".join(["a"] * 3000)
    with pytest.raises(UnsafeArchive, match="longer than 4096"):
        extract(tar((long, "file", b"x")), dest)
    with pytest.raises(UnsafeArchive, match="longer than 4096"):
        extract(tar(("l", "sym", "b/" * 3000)), None)
    untouched()
