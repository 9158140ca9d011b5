"""The layer writer: deterministic tar bytes, digests, compression, and refusals."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile

import pytest
import zstandard

from ociforge.errors import InvalidInput
from ociforge.oci import mediatypes as mt
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.layer import Entry, entries_from_tree, write_layer


def _tree(root):
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("print('a')\n")
    (root / "pkg" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "pkg" / "run.sh", 0o755)
    (root / "pkg" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 12)
    os.symlink("a.py", root / "pkg" / "link.py")
    os.link(root / "pkg" / "a.py", root / "pkg" / "sub" / "hard.py")
    return root


def _members(store, layer):
    raw = store.read_bytes(layer.digest)
    if layer.media_type.endswith("+gzip"):
        raw = gzip.decompress(raw)
    elif layer.media_type.endswith("+zstd"):
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diff_id
    return raw, list(tarfile.open(fileobj=io.BytesIO(raw)))


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_tree_layer_is_normalized(tmp_path, compression):
    src = _tree(tmp_path / "src")
    store = BlobStore(tmp_path / "store")
    layer = write_layer(entries_from_tree(src, "/app"), store, compression)
    assert layer.media_type == mt.layer_type(compression)
    assert store.size(layer.digest) == layer.size
    assert "sha256:" + hashlib.sha256(store.read_bytes(layer.digest)).hexdigest() == layer.digest
    raw, members = _members(store, layer)
    names = [m.name.rstrip("/") for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert names[0] == "app"
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
        assert not m.pax_headers  # short ASCII names need no PAX records
    by_name = {m.name.rstrip("/"): m for m in members}
    assert by_name["app/pkg/run.sh"].mode == 0o755
    assert by_name["app/pkg/a.py"].mode & 0o777 == (os.stat(src / "pkg" / "a.py").st_mode & 0o777)
    assert by_name["app/pkg/link.py"].issym() and by_name["app/pkg/link.py"].linkname == "a.py"
    # The hardlink pair: the first in sorted order holds the bytes, the other links to it.
    assert by_name["app/pkg/a.py"].isfile()
    assert by_name["app/pkg/sub/hard.py"].islnk()
    assert by_name["app/pkg/sub/hard.py"].linkname == "app/pkg/a.py"


def test_gzip_header_has_no_time_or_name(tmp_path):
    store = BlobStore(tmp_path)
    layer = write_layer([Entry.file("x", b"1")], store, "gzip")
    head = store.read_bytes(layer.digest)[:10]
    assert head[:2] == b"\x1f\x8b"
    assert head[3] & 0x08 == 0  # no FNAME
    assert head[4:8] == b"\0\0\0\0"  # MTIME 0


def test_same_entries_same_digests_any_order_any_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = _tree(tmp_path / "a")
    b = _tree(tmp_path / "b")
    os.utime(b / "pkg" / "a.py", (1, 1))  # disk mtimes do not leak into the layer
    s1, s2 = BlobStore(tmp_path / "s1"), BlobStore(tmp_path / "s2")
    for comp in ("gzip", "zstd"):
        l1 = write_layer(entries_from_tree(a, "app"), s1, comp)
        l2 = write_layer(reversed(list(entries_from_tree(b, "app"))), s2, comp)
        assert (l1.digest, l1.diff_id, l1.size) == (l2.digest, l2.diff_id, l2.size)
    _raw, members = _members(s1, l1)
    assert {m.mtime for m in members} == {1700000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    l3 = write_layer(entries_from_tree(a, "app"), s1, "zstd")
    assert l3.diff_id != l1.diff_id


def test_zstd_threads_do_not_change_bytes(tmp_path):
    data = os.urandom(1 << 16) * 64  # 4 MiB, compressible across frames of work
    store = BlobStore(tmp_path)
    one = write_layer([Entry.file("big", data)], store, "zstd", threads=1)
    two = write_layer([Entry.file("big", data)], store, "zstd", threads=2)
    assert one.digest == two.digest


def test_whiteouts_and_parents(tmp_path):
    store = BlobStore(tmp_path)
    layer = write_layer(
        [
            Entry.whiteout("etc/old.conf"),
            Entry.opaque_dir("var/cache"),
            Entry.file("etc/new.conf", b"x"),
        ],
        store,
        "none",
    )
    _raw, members = _members(store, layer)
    names = [m.name.rstrip("/") for m in members]
    assert names == [
        "etc",
        "etc/.wh.old.conf",
        "etc/new.conf",
        "var",
        "var/cache",
        "var/cache/.wh..wh..opq",
    ]
    assert all(m.size == 0 for m in members if ".wh." in m.name)


def test_long_and_unicode_names_use_pax_only_there(tmp_path):
    store = BlobStore(tmp_path)
    long = "d/" + "x" * 150
    layer = write_layer(
        [Entry.file(long, b"1"), Entry.file("d/é.txt", b"2"), Entry.file("d/short", b"3")],
        store,
        "none",
    )
    _raw, members = _members(store, layer)
    by = {m.name: m for m in members}
    assert long in by and "d/é.txt" in by
    assert not by["d/short"].pax_headers
    assert all("mtime" not in m.pax_headers for m in members)


@pytest.mark.parametrize(
    "entries, message",
    [
        ([Entry(path="../x")], "escapes"),
        ([Entry.file("a", b"1"), Entry.file("a", b"2")], "duplicate"),
        ([Entry.file("a", b"1"), Entry.file("a/b", b"2")], "not a directory"),
        ([Entry.hardlink("a", "missing")], "not earlier"),
    ],
    ids=["escape-entry", "duplicate", "file-parent", "dangling-hardlink"],
)
def test_bad_entries_are_refused_and_nothing_is_kept(tmp_path, entries, message):
    store = BlobStore(tmp_path)
    with pytest.raises(InvalidInput, match=message):
        write_layer(entries, store)
    assert list(store.blob_dir.iterdir()) == []
    assert not store.tmp_dir.exists() or list(store.tmp_dir.iterdir()) == []


def test_path_escape_in_constructor():
    with pytest.raises(InvalidInput, match="escapes the image root"):
        Entry.file("a/../../x", b"")


def test_symlink_loop_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("b", src / "a")
    os.symlink("a", src / "b")
    with pytest.raises(InvalidInput, match="symlink loop"):
        list(entries_from_tree(src, "app"))


def test_socket_is_refused(tmp_path):
    import socket

    src = tmp_path / "src"
    src.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(src / "sock"))
    try:
        with pytest.raises(InvalidInput, match="unsupported file type"):
            list(entries_from_tree(src, "app"))
    finally:
        s.close()


def test_file_vanishing_mid_write_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 10)
    entries = list(entries_from_tree(src, "app"))
    (src / "a").unlink()
    store = BlobStore(tmp_path / "store")
    with pytest.raises(InvalidInput, match="cannot read"):
        write_layer(entries, store)
    assert list(store.blob_dir.iterdir()) == []


def test_compressor_failure_is_raised_and_leaves_nothing(tmp_path, monkeypatch):
    """Hashing and compressing run on the sink's own thread: a failure there (a full disk) is
    raised by write_layer, the thread ends, and no blob is kept."""
    import threading

    from ociforge.oci import layer as layer_mod

    seen = []

    def failing(self, data):
        seen.append(len(data))
        if len(seen) > 2:
            raise OSError(28, "No space left on device")
        return len(data)

    monkeypatch.setattr(layer_mod._Compressor, "write", failing)
    entries = [Entry.file(f"f{i}", os.urandom(300_000)) for i in range(20)]  # ~6 MiB: 6 chunks
    store = BlobStore(tmp_path / "store")
    with pytest.raises(OSError, match="No space left"):
        write_layer(entries, store, "gzip")
    assert len(seen) == 3 and list(store.blob_dir.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name == "ociforge-layer-sink"]


def test_memory_stays_flat_for_a_large_layer(tmp_path):
    """A 512 MiB file through the writer in a child process: peak RSS must stay far below it."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(512):
            f.write(chunk)
    # VmHWM is this process image's own peak (ru_maxrss would carry pytest's size across exec).
    code = (
        "from ociforge.oci.blobstore import BlobStore\n"
        "from ociforge.oci.layer import Entry, write_layer\n"
        f"l = write_layer([Entry.from_file('big', {str(big)!r})], BlobStore({str(tmp_path / 's')!r}), 'zstd')\n"
        "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak_kib = int(out.stdout.strip())
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB for a 512 MiB layer"


def test_ignore_patterns(tmp_path):
    src = _tree(tmp_path / "src")
    (src / "pkg" / "__pycache__").mkdir()
    (src / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    (src / "pkg" / "b.pyc").write_bytes(b"x")
    names = [e.path for e in entries_from_tree(src, "app", ignore=("__pycache__", "*.pyc"))]
    assert "app/pkg/a.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
