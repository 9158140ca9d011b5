"""ociforge's tar headers are byte for byte Python's ``tarfile`` in PAX format, and a layer
written with them reads back with ``tarfile`` (and GNU tar) as the entries it was given."""

from __future__ import annotations

import io
import itertools
import random
import subprocess
import tarfile

import pytest

from ociforge.errors import InvalidInput
from ociforge.oci import tarformat
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.layer import Entry, decompressor, write_layer, write_tar

NAMES = [
    "a",
    "usr/lib/x.so",
    "x" * 99,
    "x" * 100,  # the longest ustar name
    "y" * 101,  # a PAX path
    "é/ü.py",  # not ASCII: a PAX path, '?' in the ustar field
    "bad\udcff.txt",  # not UTF-8 on disk: hdrcharset=BINARY
    "z/" * 80,
    "日本/" + "n" * 120,
]
LINKS = ["", "target", "l" * 100, "l" * 101, "ü", "bad\udcfe"]
KINDS = [tarformat.REGTYPE, tarformat.LNKTYPE, tarformat.SYMTYPE, tarformat.DIRTYPE]


def _tarfile_header(name, kind, mode, size, mtime, uid, gid, linkname) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime, ti.uid, ti.gid = kind, mode, size, mtime, uid, gid
    ti.uname = ti.gname = ""
    ti.linkname = linkname
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def test_headers_are_tarfiles_pax_headers():
    rng = random.Random(7)
    for _ in range(3000):
        args = (
            rng.choice(NAMES),
            rng.choice(KINDS),
            rng.choice([0o644, 0o755, 0o777, 0o104755, 0o40755]),  # type bits are dropped
            rng.choice([0, 1, 511, 512, 10**6, 8**11 - 1, 8**11, 9 * 2**30]),  # >= 8 GiB: PAX
            rng.choice([0, 1_700_000_000, 8**11, -1]),
            rng.choice([0, 65532, 8**7 - 1, 8**7, 10**9]),
            rng.choice([0, 65532, 8**7]),
            rng.choice(LINKS),
        )
        name, kind, mode, size, mtime, uid, gid, link = args
        ours = tarformat.header(
            name, kind, mode=mode, size=size, mtime=mtime, uid=uid, gid=gid, linkname=link
        )
        assert ours == _tarfile_header(*args), args


@pytest.mark.parametrize("offset", [0, 512, 9 * 512, 18 * 512, 20 * 512, 12345 * 512])
def test_the_end_of_the_archive_is_tarfiles(offset):
    buf = io.BytesIO()
    tf = tarfile.TarFile(fileobj=buf, mode="w")
    tf.offset = offset
    tf.close()
    assert tarformat.end(offset) == buf.getvalue()


def test_a_layer_reads_back_as_its_entries(tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * 9000)  # over 1 MiB: copied in pieces
    entries = [
        Entry.dir("opt/é"),
        Entry.file("opt/é/" + "n" * 120, b"long name", mode=0o600),
        Entry.file("opt/empty", b""),
        Entry.from_file("opt/big.bin", src),
        Entry.symlink("opt/link", "/" + "t" * 150),
        Entry.hardlink("opt/hard", "opt/empty"),
        Entry.whiteout("opt/gone"),
        Entry("opt/streamed", "file", 0o755, size=5, opener=lambda: io.BytesIO(b"12345")),
    ]
    buf = io.BytesIO()
    write_tar(entries, buf, epoch=1_700_000_000)
    data = buf.getvalue()
    assert len(data) % tarformat.RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        got = {m.name: m for m in tf.getmembers()}
        assert got["opt/é/" + "n" * 120].mode == 0o600
        assert tf.extractfile("opt/é/" + "n" * 120).read() == b"long name"
        assert tf.extractfile("opt/big.bin").read() == src.read_bytes()
        assert tf.extractfile("opt/streamed").read() == b"12345"
        assert got["opt/streamed"].mode == 0o755
        assert got["opt/link"].issym() and got["opt/link"].linkname == "/" + "t" * 150
        assert got["opt/hard"].islnk() and got["opt/hard"].linkname == "opt/empty"
        assert got["opt/.wh.gone"].isfile() and got["opt/.wh.gone"].size == 0
        assert {m.mtime for m in got.values()} == {1_700_000_000}
        assert {(m.uid, m.gid, m.uname, m.gname) for m in got.values()} == {(0, 0, "", "")}
    listing = subprocess.run(
        ["tar", "-tvf", "-"], input=data, capture_output=True, check=True
    ).stdout.decode()
    assert ("n" * 120) in listing and "opt/big.bin" in listing


def test_a_short_stream_is_refused_and_leaves_nothing(tmp_path):
    store = BlobStore(tmp_path / "store")
    short = Entry("app/f", "file", 0o644, size=10, opener=lambda: io.BytesIO(b"only4"))
    with pytest.raises(InvalidInput, match="ended after 5 of its 10 bytes"):
        write_layer([short], store)
    with pytest.raises(InvalidInput, match="no content"):
        write_layer([Entry("app/g", "file", 0o644, size=3)], store)
    assert list(store.blob_dir.iterdir()) == []


def test_digests_match_a_tarfile_written_layer(tmp_path):
    """The same entries through tarfile itself give the same tar bytes (so layers built before
    ociforge wrote its own headers keep their digests)."""
    entries = [Entry.dir("d"), Entry.file("d/a.py", b"print(1)\n")]
    entries += [Entry.file(f"d/{i:03d}" + "x" * (i % 150), bytes([i]) * i) for i in range(1, 200)]
    ours = io.BytesIO()
    write_tar(entries, ours, epoch=0)
    theirs = io.BytesIO()
    with tarfile.TarFile(fileobj=theirs, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in sorted(entries, key=lambda e: e.path):
            ti = tarfile.TarInfo(e.path + ("/" if e.kind == "dir" else ""))
            ti.type = tarfile.DIRTYPE if e.kind == "dir" else tarfile.REGTYPE
            ti.mode, ti.uname, ti.gname = e.mode, "", ""
            ti.size = len(e.data or b"")
            tf.addfile(ti, io.BytesIO(e.data) if e.data is not None else None)
    assert ours.getvalue() == theirs.getvalue()
    store = BlobStore(tmp_path / "s")
    layer = write_layer(entries, store, "zstd", epoch=0)
    with store.open_blob(layer.descriptor.digest) as raw:
        stream = decompressor(raw, layer.descriptor.media_type)
        assert b"".join(iter(lambda: stream.read(1 << 16), b"")) == ours.getvalue()


def test_pax_lengths_count_their_own_digits():
    """A record's length field includes its own digits: lengths at 9/10 and 99/100 bytes."""
    for n in itertools.chain(range(1, 12), range(85, 100)):
        name = "p" * (101 + n)
        head = tarformat.header(name, tarformat.REGTYPE, mode=0o644)
        assert head == _tarfile_header(name, tarformat.REGTYPE, 0o644, 0, 0, 0, 0, "")
