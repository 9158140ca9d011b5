"""WheelZip inflates with zlib-ng and gives zipfile's bytes (CRC still checked); SharedZip reads
a wheel's large members from one open zip, closed after the last."""

from __future__ import annotations

import os
import zipfile

import pytest

from ociforge.python.wheelzip import SharedZip, WheelZip


def make_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_same_bytes_as_zipfile_and_crc_checked(tmp_path):
    big = os.urandom(1 << 16) * 40 + bytes(range(256)) * 5000  # compressible and not
    members = {"a/x.py": b"print('hi')\n" * 1000, "a/big.so": big, "empty": b""}
    path = tmp_path / "w.whl"
    make_zip(path, members)
    with WheelZip(path) as wz, zipfile.ZipFile(path) as plain:
        for name, data in members.items():
            with wz.open(name) as f:
                assert "zlib_ng" in type(f._decompressor).__module__  # zipfile's one hook held
                got = b"".join(iter(lambda: f.read(7919), b""))
            assert got == data == plain.read(name)

    # flip one byte inside big.so's deflate stream: the CRC check still catches it
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a/big.so")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0x01
    bad = tmp_path / "bad.whl"
    bad.write_bytes(bytes(raw))
    with WheelZip(bad) as wz, pytest.raises(zipfile.BadZipFile, match="CRC-32"):
        wz.read("a/big.so")


def test_shared_zip_closes_after_the_last_member_and_reopens(tmp_path):
    path = tmp_path / "w.whl"
    make_zip(path, {"one": b"1" * 5000, "two": b"2" * 5000})
    zf = WheelZip(path)
    shared = SharedZip(path, zf)
    one, two = shared.later("one"), shared.later("two")
    assert shared.waiting == 2
    with one() as f:
        assert f.read() == b"1" * 5000
    assert zf.fp is not None  # one member still to come
    with two() as f:
        assert f.read() == b"2" * 5000
    assert zf.fp is None and shared.waiting == 0  # closed after the last
    with one() as f:  # read once more (a layer written again): opened again
        assert f.read() == b"1" * 5000
