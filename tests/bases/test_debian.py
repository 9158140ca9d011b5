"""ociforge.bases.debian: signature and hash checks, resolution, and .deb data streamed into layers."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import tarfile

import pytest
import zstandard

from ociforge.bases import debian
from ociforge.cachedir import default_cache_dir
from ociforge.errors import DigestMismatch, InvalidInput, NotFound
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.digest import of_bytes
from ociforge.oci.layer import write_layer

# ------------------------------------------------------------------------------------------
# Synthetic .deb files: an ar archive with debian-binary, control.tar.gz and data.tar.*


def _tar(members: list[tuple[str, str, bytes | str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, payload in members:
            ti = tarfile.TarInfo(name)
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, payload
                tf.addfile(ti)
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, payload
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(payload), 0o755 if kind == "exe" else 0o644
                tf.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            out += b"\n"
    return out


def make_deb(path, members, compression="xz") -> None:
    data = _tar(members)
    packed = {
        "xz": lzma.compress,
        "gz": lambda d: gzip.compress(d, mtime=0),
        "zst": lambda d: zstandard.ZstdCompressor().compress(d),
        "": lambda d: d,
    }[compression](data)
    name = "data.tar" + (f".{compression}" if compression else "")
    path.write_bytes(
        _ar(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", gzip.compress(_tar([]), mtime=0)),
                (name, packed),
            ]
        )
    )


FILES = [
    ("./", "dir", b""),
    ("./lib/", "dir", b""),
    ("./lib/x86_64-linux-gnu/", "dir", b""),
    ("./lib/x86_64-linux-gnu/libdemo.so.1", "file", b"\x7fELF demo library" * 1000),
    ("./usr/", "dir", b""),
    ("./usr/bin/", "dir", b""),
    ("./usr/bin/demo", "exe", b"#!demo\n"),
    ("./usr/bin/demo-alias", "link", "./usr/bin/demo"),
    ("./usr/lib/", "dir", b""),
    ("./usr/lib/x86_64-linux-gnu/", "dir", b""),
    ("./usr/lib/x86_64-linux-gnu/libdemo.so", "sym", "/lib/x86_64-linux-gnu/libdemo.so.1"),
]


def _layer_members(store, layer) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out = {}
    with (
        store.open_blob(layer.digest) as raw,
        tarfile.open(fileobj=gzip.GzipFile(fileobj=raw), mode="r|") as tf,
    ):
        for ti in tf:
            f = tf.extractfile(ti) if ti.isreg() else None
            out[ti.name.rstrip("/")] = (ti, f.read() if f else b"")
    return out


@pytest.mark.parametrize("compression", ["xz", "zst", "gz", ""])
def test_deb_data_streams_into_a_layer_with_merged_usr(tmp_path, compression):
    deb = tmp_path / "demo.deb"
    make_deb(deb, FILES, compression)
    data = debian.DebData(deb, "demo.deb")
    entries = debian.merge_entries([("demo", debian.deb_entries(data))])
    store = BlobStore(tmp_path / "store")
    layer = write_layer(entries, store, "gzip", epoch=0)
    data.close()
    got = _layer_members(store, layer)
    # /lib/... moved under /usr, and /lib made the merged-/usr alias symlink.
    assert got["usr/lib/x86_64-linux-gnu/libdemo.so.1"][1] == b"\x7fELF demo library" * 1000
    assert got["lib"][0].issym() and got["lib"][0].linkname == "usr/lib"
    assert got["usr/bin/demo"][1] == b"#!demo\n" and got["usr/bin/demo"][0].mode == 0o755
    assert (
        got["usr/bin/demo-alias"][0].islnk()
        and got["usr/bin/demo-alias"][0].linkname == "usr/bin/demo"
    )
    assert (
        got["usr/lib/x86_64-linux-gnu/libdemo.so"][0].linkname
        == "/lib/x86_64-linux-gnu/libdemo.so.1"
    )
    # Two side-by-side passes served every member, though usrmerge reordered them.
    assert data.passes == 2


def test_same_deb_gives_the_same_layer_digest(tmp_path):
    deb = tmp_path / "demo.deb"
    make_deb(deb, FILES)
    digests = set()
    for i in range(2):
        data = debian.DebData(deb)
        store = BlobStore(tmp_path / f"store{i}")
        digests.add(write_layer(debian.deb_entries(data), store, "gzip", epoch=1700000000).digest)
        data.close()
    assert len(digests) == 1


def test_not_a_deb_and_conflicting_files_are_refused(tmp_path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"PK\x03\x04 not an ar archive")
    with pytest.raises(InvalidInput, match="not a .deb"):
        debian.DebData(bad)
    a, b = tmp_path / "a.deb", tmp_path / "b.deb"
    make_deb(a, [("./etc/", "dir", b""), ("./etc/conf", "file", b"a")])
    make_deb(b, [("./etc/", "dir", b""), ("./etc/conf", "sym", "other")])
    groups = [(n, debian.deb_entries(debian.DebData(p))) for n, p in (("a", a), ("b", b))]
    with pytest.raises(InvalidInput, match="shipped by both a .* and b"):
        debian.merge_entries(groups)


# ------------------------------------------------------------------------------------------
# Resolution


def _pkg(name, version="1.0", depends="", pre="", provides="", priority="optional"):
    return debian.Package(
        name=name,
        version=version,
        architecture="amd64",
        filename=f"pool/{name}.deb",
        sha256="0" * 64,
        size=1,
        depends=depends,
        pre_depends=pre,
        provides=provides,
        priority=priority,
    )


def _index(*pkgs):
    idx = debian.PackageIndex("amd64")
    for p in pkgs:
        idx.add(p)
    return idx


def test_resolution_follows_apt_choices():
    idx = _index(
        _pkg(
            "app",
            depends="libc6 (>= 2.36), mail-transport-agent, zlib1g | libz-ng, debconf | debconf-2.0",
            pre="dpkg-ish",
        ),
        _pkg("libc6", "2.35"),
        _pkg("libc6", "2.36-9"),
        _pkg("zlib1g"),
        _pkg("libz-ng"),
        _pkg("dpkg-ish"),
        _pkg("exim4", provides="mail-transport-agent", priority="standard"),
        _pkg("postfix", provides="mail-transport-agent", priority="optional"),
        _pkg("debconf", depends="perl-base"),
        _pkg("perl-base"),
    )
    names = {p.name: p.version for p in debian.resolve(idx, ["app"], exclude=["debconf"])}
    assert names == {
        "app": "1.0",
        "libc6": "2.36-9",
        "zlib1g": "1.0",
        "dpkg-ish": "1.0",
        "exim4": "1.0",
    }
    names = debian.resolve(idx, ["app"], exclude=["debconf"], prefer=["postfix"])
    assert "postfix" in {p.name for p in names} and "exim4" not in {p.name for p in names}


def test_unsatisfiable_dependency_names_the_package():
    idx = _index(_pkg("app", depends="libfoo (>= 2)"), _pkg("libfoo", "1.5"))
    with pytest.raises(NotFound, match=r"app 1.0 depends on libfoo \(>= 2\)"):
        debian.resolve(idx, ["app"])
    with pytest.raises(NotFound, match="not in the index"):
        debian.resolve(idx, ["nosuch"])


def test_paragraph_parser_keeps_continuations():
    text = (
        "Package: a\nVersion: 1\nDescription: x\n more\nDepends: b,\n c\n\nPackage: b\nVersion: 2\n"
    )
    paras = list(debian.iter_paragraphs(text.splitlines(keepends=True)))
    assert [p["Package"] for p in paras] == ["a", "b"]
    assert paras[0]["Depends"] == "b,\nc" and "Description" not in paras[0]


# ------------------------------------------------------------------------------------------
# Signatures and hashes (real InRelease from deb.debian.org; tampering served from loopback)


@pytest.fixture(scope="module")
def inrelease():
    with debian._open_url(f"{debian.DEFAULT_MIRROR}/dists/bookworm/InRelease") as f:
        return f.read()


def test_genuine_inrelease_verifies(inrelease):
    text = debian.verify_inrelease(inrelease).decode()
    rel = debian.parse_release(text, "m", "bookworm")
    assert rel.codename == "bookworm" and "main/binary-arm64/Packages.xz" in rel.files


def test_tampered_inrelease_is_refused(inrelease, http_dir):
    root, url = http_dir
    tampered = inrelease.replace(b"Codename: bookworm", b"Codename: bookwarm", 1)
    assert tampered != inrelease
    (root / "dists" / "bookworm").mkdir(parents=True)
    (root / "dists" / "bookworm" / "InRelease").write_bytes(tampered)
    with pytest.raises(debian.BadSignature, match="bad signature"):
        debian.fetch_release(url, "bookworm")
    # Signed by a key that is not in the keyring given: refused too.
    (root / "dists" / "bookworm" / "InRelease").write_bytes(inrelease)
    empty = root.parent / "empty.gpg"
    empty.write_bytes(b"")
    with pytest.raises(debian.BadSignature, match="no valid signature"):
        debian.fetch_release(url, "bookworm", keyring=str(empty))
    # The real file, served locally, is accepted.
    assert debian.fetch_release(url, "bookworm").codename == "bookworm"


def test_tampered_deb_is_refused_and_not_cached(tmp_path, http_dir):
    root, url = http_dir
    good = b"the genuine package"
    pkg = debian.Package(
        "demo", "1", "amd64", "pool/main/d/demo/demo_1_amd64.deb", of_bytes(good)[7:], len(good)
    )
    (root / "pool/main/d/demo").mkdir(parents=True)
    (root / pkg.filename).write_bytes(b"the tampered package")
    cache = tmp_path / "debs"
    with pytest.raises(DigestMismatch, match=r"demo_1_amd64.deb .* expected sha256:"):
        debian.fetch_deb(url, pkg, cache)
    assert not cache.exists() or not any(p for p in cache.iterdir() if not p.name.startswith("."))
    assert [p for p in cache.iterdir()] == [] if cache.exists() else True
    (root / pkg.filename).write_bytes(good)
    path = debian.fetch_deb(url, pkg, cache)
    assert path.read_bytes() == good and path.name == f"{pkg.sha256}.deb"
    assert default_cache_dir() != cache and os.path.isfile(path)
