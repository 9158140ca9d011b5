"""The ELF reader (ociforge.python.elf): real files of this host, numpy's extension module, an
aarch64 one from numpy's aarch64 wheel (downloaded once into the test cache), files written here in every class and byte order, members
read through a wheel's zip, and any bytes at all (a result or InvalidInput, nothing else)."""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ociforge.errors import InvalidInput
from ociforge.python.elf import read_elf, read_elf_path
from ociforge.python.wheelzip import WheelZip
from tests.support.elfmaker import make_elf

LIBC = next((p for p in glob.glob("/usr/lib/*-linux-gnu/libc.so.6")), None)
TEST_CACHE = Path.home() / ".cache" / "ociforge-test" / "aarch64-wheels"


def test_host_libc_and_a_program():
    assert LIBC is not None, "no /usr/lib/*-linux-gnu/libc.so.6 on this (Debian) machine"
    libc = read_elf_path(LIBC)
    assert libc.soname == "libc.so.6"
    assert libc.bits == 64 and libc.little_endian and libc.type == 3
    assert any(n.startswith("ld-linux") for n in libc.needed)
    ls = read_elf_path("/bin/ls")
    assert "libc.so.6" in ls.needed and ls.soname is None


def test_not_elf_is_none(tmp_path):
    (tmp_path / "x.so").write_bytes(b"#!/bin/sh\necho hi\n")
    assert read_elf_path(tmp_path / "x.so") is None
    assert read_elf(io.BytesIO(b"")) is None


def _numpy_extension() -> Path:
    root = Path(numpy.__file__).parent
    found = sorted(root.glob("_core/_multiarray_umath*.so")) + sorted(
        root.glob("core/_multiarray_umath*.so")
    )
    assert found, f"numpy's extension module is not under {root}"
    return found[0]


def test_numpy_extension_module_rpath_origin():
    ext = _numpy_extension()
    info = read_elf_path(ext)
    assert info.arch == sysconfig.get_platform().rpartition("-")[2].replace("amd64", "x86_64")
    assert "libc.so.6" in info.needed
    if "numpy.libs" in "".join(info.rpath + info.runpath):  # manylinux wheels: auditwheel's RPATH
        assert any(p.startswith("$ORIGIN") for p in info.rpath + info.runpath)
        assert any(n.startswith("libscipy_openblas") for n in info.needed)


def test_zip_member_reads_the_same_as_the_file(tmp_path):
    ext = _numpy_extension()
    whl = tmp_path / "w.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(ext, "pkg/ext.so")
    with WheelZip(whl) as zf, zf.open("pkg/ext.so") as member:
        assert read_elf(member) == read_elf_path(ext)


def _aarch64_wheel_so() -> tuple[Path, str]:
    """An extension module of numpy's aarch64 wheel (this numpy's version), downloaded from PyPI
    once into the test cache."""
    wheels = sorted(TEST_CACHE.glob(f"numpy-{numpy.__version__}-*aarch64*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64",
             "--python-version",
             f"{sys.version_info.major}.{sys.version_info.minor}",
             f"numpy=={numpy.__version__}", "-d", str(TEST_CACHE)],
            check=True,
        )  # fmt: skip
        wheels = sorted(TEST_CACHE.glob(f"numpy-{numpy.__version__}-*aarch64*.whl"))
    assert wheels, f"pip downloaded no aarch64 numpy wheel into {TEST_CACHE}"
    with zipfile.ZipFile(wheels[0]) as zf:
        name = next(n for n in zf.namelist() if "_multiarray_umath" in n and n.endswith(".so"))
    return wheels[0], name


def test_aarch64_extension_from_numpys_wheel():
    whl, name = _aarch64_wheel_so()
    with WheelZip(whl) as zf, zf.open(name) as member:
        info = read_elf(member, name)
    assert info.arch == "aarch64" and info.bits == 64 and info.little_endian
    assert info.dynamic and "libc.so.6" in info.needed


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("sections_only", [False, True])
def test_written_files_in_every_class_and_byte_order(bits, little, sections_only):
    data = make_elf(
        ("libGL.so.1", "libc.so.6"),
        soname="libthing.so.2",
        rpath="$ORIGIN/../x.libs:/opt/lib",
        runpath="$ORIGIN",
        bits=bits,
        little=little,
        machine="s390x" if not little else "aarch64",
        sections_only=sections_only,
    )
    info = read_elf(io.BytesIO(data))
    assert info.bits == bits and info.little_endian is little
    assert info.arch == ("aarch64" if little else "s390x")
    assert info.needed == ("libGL.so.1", "libc.so.6")
    assert info.soname == "libthing.so.2"
    assert info.rpath == ("$ORIGIN/../x.libs", "/opt/lib")
    assert info.runpath == ("$ORIGIN",)


def test_truncated_and_corrupt_files_are_invalid_input():
    data = make_elf(("libfoo.so",))
    for cut in (20, 70, len(data) - 20):
        with pytest.raises(InvalidInput):
            read_elf(io.BytesIO(data[:cut]))
    bad = bytearray(data)
    bad[4] = 9  # class
    with pytest.raises(InvalidInput, match="class"):
        read_elf(io.BytesIO(bytes(bad)))


def test_reads_little_of_a_big_file(tmp_path):
    """Only the headers, the dynamic segment and the strings are read, never the whole file."""
    data = make_elf(("libz.so.1",))
    padded = data + os.urandom(1 << 20)

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            assert n is not None and n >= 0, "a read of the whole file"
            out = super().read(n)
            Counting.read_bytes += len(out)
            return out

    assert read_elf(Counting(padded)).needed == ("libz.so.1",)
    assert Counting.read_bytes < 4096


_SEED = make_elf(("libGL.so.1",), soname="s.so", rpath="$ORIGIN", bits=64)
_SEED32 = make_elf(("libm.so.6",), runpath="/x", bits=32, little=False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=512),
        st.builds(lambda b: b"\x7fELF" + b, st.binary(max_size=512)),
        st.tuples(
            st.sampled_from([_SEED, _SEED32]),
            st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
            st.integers(0, 400),
        ).map(
            lambda t: bytes(
                (lambda b: [b.__setitem__(i % len(b), v) for i, v in t[1]] and b or b)(
                    bytearray(t[0])
                )
            )[: max(len(t[0]) - t[2], 0) or None]
        ),
    )
)
def test_any_bytes_give_a_result_or_invalid_input(data):
    try:
        out = read_elf(io.BytesIO(data))
    except InvalidInput:
        return
    assert out is None or isinstance(out.needed, tuple)
