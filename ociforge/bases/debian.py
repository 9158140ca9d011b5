"""Debian archives, read the way apt reads them, without apt, dpkg or root.

Why by hand: a base image must be buildable from nothing but a Debian mirror (air-gapped sites
mirror Debian, not Docker Hub), for any architecture, on any host, with no chroot and no emulation.
So this module:

* fetches ``dists/SUITE/InRelease`` and trusts only the text ``gpgv`` verified against the Debian
  archive keyring (:func:`fetch_release`);
* fetches ``main/binary-ARCH/Packages.xz``, checks it against the hash the signed release lists,
  and parses it in one streaming pass (:func:`fetch_index`);
* resolves ``Pre-Depends``/``Depends`` the way apt would for a minimal system: no Recommends, the
  first satisfiable alternative of each group, a virtual package by its best provider
  (:func:`resolve`);
* downloads each ``.deb`` into a cache keyed by sha256, kept only when the hash matches
  (:func:`fetch_deb`);
* turns a ``.deb``'s ``data.tar.{xz,zst,gz}`` into layer :class:`~ociforge.oci.layer.Entry` objects whose
  content is streamed from the cached ``.deb`` while the layer is written: nothing is unpacked to
  a temporary tree and memory stays flat (:func:`deb_entries`).

Maintainer scripts are never run; ``ociforge.bases.base`` does what they would have done that a
container needs (users, the CA bundle). Paths are rewritten for merged ``/usr`` (``/lib/x`` lands at
``/usr/lib/x``) as Debian has done since bookworm.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import requests
import zstandard
from debian.deb822 import PkgRelation
from debian.debian_support import Version, version_compare

from ..cachedir import default_cache_dir
from ..errors import DigestMismatch, InvalidInput, NotFound, OciforgeError
from ..oci.digest import CHUNK
from ..oci.layer import Entry, image_path

log = logging.getLogger(__name__)

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Top-level directories that are symlinks into /usr on a merged-/usr system.
USRMERGE_ALIASES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PRIORITY = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}
_INDEX_FIELDS = {
    "Package",
    "Version",
    "Architecture",
    "Depends",
    "Pre-Depends",
    "Provides",
    "Filename",
    "SHA256",
    "Size",
    "Priority",
    "Essential",
    "Source",
}


class BadSignature(OciforgeError):
    """An ``InRelease`` file whose signature gpgv does not accept against the keyring."""


# ---------------------------------------------------------------------------------------------
# Fetching


def upstream_version(version: str) -> str:
    """The upstream part of a Debian version: ``1:3.11.2-6+deb12u8`` → ``3.11.2``."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0].split("+", 1)[0]


# A download whose size nothing declares is still bounded (a .deb or index is far smaller).
MAX_UNSIZED_DOWNLOAD = 4 << 30


def _open_url(url: str, timeout: float = 60.0) -> BinaryIO:
    """A readable stream for ``http(s)://`` (TLS verified) or ``file://`` URLs."""
    if url.startswith("file://"):
        try:
            return open(url[len("file://") :], "rb")
        except OSError as e:
            raise NotFound(f"{url}: {e.strerror}") from None
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"unsupported mirror URL {url!r}: use http://, https:// or file://")
    try:
        resp = requests.get(url, stream=True, timeout=timeout)
    except requests.RequestException as e:
        raise NotFound(f"cannot fetch {url}: {type(e).__name__}") from None
    if resp.status_code != 200:
        resp.close()
        raise NotFound(f"cannot fetch {url}: HTTP {resp.status_code}")
    resp.raw.decode_content = True
    return resp.raw


def _download(url: str, dest: Path, sha256: str, what: str, size: int | None = None) -> Path:
    """Stream ``url`` to ``dest`` by atomic rename, only when its sha256 is ``sha256`` (hex).

    ``size`` (from the signed index) bounds the download: a server that sends more is cut there
    and the file refused, so an endless answer cannot fill the disk before the hash check.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
    h = hashlib.sha256()
    limit = size if size else MAX_UNSIZED_DOWNLOAD
    got = 0
    try:
        with os.fdopen(fd, "wb") as out, contextlib.closing(_open_url(url)) as src:
            while chunk := src.read(min(CHUNK, limit + 1 - got)):
                got += len(chunk)
                if got > limit:
                    raise DigestMismatch(
                        f"{what} from {url} is longer than the {limit} bytes "
                        f"{'its index gives' if size else 'allowed'}, expected sha256:{sha256}; "
                        "cut and not kept"
                    )
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            raise DigestMismatch(
                f"{what} from {url} hashes to sha256:{h.hexdigest()}, expected sha256:{sha256}; not kept"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


# ---------------------------------------------------------------------------------------------
# InRelease


@dataclass(frozen=True)
class Release:
    """The verified ``InRelease`` of a suite: its files' hashes and its date."""

    mirror: str
    suite: str
    codename: str
    date: int  # seconds since the epoch
    by_hash: bool
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (sha256 hex, size)


def verify_inrelease(
    signed: bytes, keyring: str = DEFAULT_KEYRING, what: str = "InRelease"
) -> bytes:
    """The text gpgv verified in a clearsigned file; raise :class:`BadSignature` otherwise.

    Only gpgv's own output is trusted, never the unverified text around the signature.
    """
    if not os.path.isfile(keyring):
        raise NotFound(
            f"keyring {keyring} not found (install debian-archive-keyring, or pass --keyring)"
        )
    with tempfile.TemporaryDirectory(prefix="ociforge-gpgv-") as tmp:
        src, out = os.path.join(tmp, "InRelease"), os.path.join(tmp, "Release")
        with open(src, "wb") as f:
            f.write(signed)
        try:
            proc = subprocess.run(
                ["gpgv", "--keyring", keyring, "--status-fd", "1", "--output", out, src],
                capture_output=True,
                timeout=60,
            )
        except FileNotFoundError:
            raise NotFound(
                "gpgv not found: install the gpgv package to verify Debian archives"
            ) from None
        status = proc.stdout.decode(errors="replace")
        if proc.returncode != 0 or "[GNUPG:] VALIDSIG" not in status:
            reason = (
                "bad signature" if "BADSIG" in status else "no valid signature from the keyring"
            )
            raise BadSignature(f"{what}: {reason} (keyring {keyring}); refusing to use it")
        with open(out, "rb") as f:
            return f.read()


def parse_release(text: str, mirror: str, suite: str) -> Release:
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, int]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith(" ") and section == "SHA256":
            parts = line.split()
            if len(parts) == 3:
                files[parts[2]] = (parts[0], int(parts[1]))
        elif ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            section = key
            fields[key] = value.strip()
    if suite not in (fields.get("Suite"), fields.get("Codename")):
        raise InvalidInput(
            f"{mirror}/dists/{suite}/InRelease is signed for suite {fields.get('Suite')!r} "
            f"({fields.get('Codename')!r}), not {suite!r}"
        )
    try:
        date = int(email.utils.parsedate_to_datetime(fields["Date"]).timestamp())
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"{mirror}/dists/{suite}/InRelease has no valid Date") from None
    return Release(
        mirror=mirror,
        suite=suite,
        codename=fields.get("Codename", suite),
        date=date,
        by_hash=fields.get("Acquire-By-Hash", "").lower() == "yes",
        files=files,
    )


def fetch_release(mirror: str, suite: str, keyring: str = DEFAULT_KEYRING) -> Release:
    """Download and verify ``dists/SUITE/InRelease`` (a small file, read whole)."""
    mirror = mirror.rstrip("/")
    url = f"{mirror}/dists/{suite}/InRelease"
    with contextlib.closing(_open_url(url)) as f:
        signed = f.read(16 << 20)
    text = verify_inrelease(signed, keyring, what=url).decode("utf-8", errors="replace")
    return parse_release(text, mirror, suite)


# ---------------------------------------------------------------------------------------------
# Packages index


@dataclass(frozen=True)
class Package:
    """One binary package of an index (only the fields resolution and download need)."""

    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    size: int
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    priority: str = ""
    essential: bool = False
    source: str = ""

    def lock_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "source": self.source or self.name,
        }

    @classmethod
    def from_lock(cls, obj: dict) -> Package:
        try:
            return cls(
                name=obj["name"],
                version=obj["version"],
                architecture=obj["architecture"],
                filename=obj["filename"],
                sha256=obj["sha256"],
                size=int(obj["size"]),
                source=obj.get("source", ""),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"invalid lock entry {obj!r}: {e}") from None


def iter_paragraphs(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Stream deb822 paragraphs (fields we need only), one at a time."""
    para: dict[str, str] = {}
    key = ""
    for line in lines:
        if not line.strip():
            if para:
                yield para
            para, key = {}, ""
            continue
        if line[0] in " \t":
            if key:
                para[key] += "\n" + line.strip()
            continue
        k, _, v = line.partition(":")
        key = k if k in _INDEX_FIELDS else ""
        if key:
            para[key] = v.strip()
    if para:
        yield para


@dataclass
class PackageIndex:
    """The packages of one suite, component set and architecture, by name and by what they provide."""

    arch: str
    packages: dict[str, list[Package]] = field(default_factory=dict)
    providers: dict[str, list[tuple[Package, str]]] = field(default_factory=dict)

    def add(self, pkg: Package) -> None:
        self.packages.setdefault(pkg.name, []).append(pkg)
        if pkg.provides:
            for group in _relations(pkg.provides):
                for rel in group:
                    ver = rel["version"][1] if rel.get("version") else ""
                    self.providers.setdefault(rel["name"], []).append((pkg, ver))

    def candidates(self, name: str) -> list[Package]:
        """Versions of ``name``, newest first (what apt's candidate would be is the first)."""
        return sorted(self.packages.get(name, ()), key=lambda p: Version(p.version), reverse=True)


def _parse_index(stream: BinaryIO, arch: str, index: PackageIndex) -> None:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    for p in iter_paragraphs(text):
        if p.get("Architecture") not in (arch, "all") or "Filename" not in p or "SHA256" not in p:
            continue
        index.add(
            Package(
                name=p["Package"],
                version=p["Version"],
                architecture=p["Architecture"],
                filename=p["Filename"],
                sha256=p["SHA256"],
                size=int(p.get("Size", "0")),
                depends=p.get("Depends", ""),
                pre_depends=p.get("Pre-Depends", ""),
                provides=p.get("Provides", ""),
                priority=p.get("Priority", ""),
                essential=p.get("Essential", "").lower() == "yes",
                source=p.get("Source", "").split(" ")[0],
            )
        )


def fetch_index(
    release: Release,
    arch: str,
    components: Iterable[str] = ("main",),
    cache_dir: Path | None = None,
) -> PackageIndex:
    """Download (or reuse from the cache) and parse the verified ``Packages`` indexes."""
    cache = (cache_dir or default_cache_dir()) / "debian-indexes"
    index = PackageIndex(arch)
    for comp in components:
        for name, opener in (("Packages.xz", lzma.open), ("Packages.gz", gzip.open)):  # noqa: B007
            rel = f"{comp}/binary-{arch}/{name}"
            if rel in release.files:
                break
        else:
            raise NotFound(
                f"{release.mirror}/dists/{release.suite} has no {comp}/binary-{arch}/Packages.xz "
                f"(is {arch} an architecture of this suite?)"
            )
        sha, size = release.files[rel]
        path = cache / sha
        if not path.is_file():
            base = f"{release.mirror}/dists/{release.suite}"
            url = (
                f"{base}/{comp}/binary-{arch}/by-hash/SHA256/{sha}"
                if release.by_hash
                else f"{base}/{rel}"
            )
            _download(url, path, sha, what=rel, size=size)
        with opener(path, "rb") as f:
            _parse_index(f, arch, index)
    return index


# ---------------------------------------------------------------------------------------------
# Resolution


def _satisfies(version: str, constraint: tuple[str, str] | None) -> bool:
    if not constraint:
        return True
    if not version:
        return False  # an unversioned Provides satisfies no versioned dependency
    op, want = constraint
    c = version_compare(version, want)
    return {"<<": c < 0, "<=": c <= 0, "=": c == 0, ">=": c >= 0, ">>": c > 0}.get(op, False)


def resolve(
    index: PackageIndex,
    roots: Iterable[str],
    exclude: Iterable[str] = (),
    prefer: Iterable[str] = (),
    installed: Iterable[Package] = (),
) -> list[Package]:
    """The packages to install for ``roots``: their Pre-Depends and Depends, transitively.

    As apt does for ``--no-install-recommends``: a group already satisfied by a chosen package is
    skipped; otherwise its first alternative that exists in a satisfying version is taken, and a
    virtual package goes to its provider named in ``prefer``, else the one of highest priority
    (then by name). A group naming an ``exclude``d package is skipped: the recipe says the system
    works without it (debconf, for example, is only used by maintainer scripts, which are not run).
    ``installed`` are already on the system (a base's packages, under its system packages): they
    satisfy what they can and are not returned. Returns the packages sorted by name.
    """
    exclude, prefer = set(exclude), list(prefer)
    chosen: dict[str, Package] = {}
    provided: dict[str, list[str]] = {}  # virtual name -> versions provided by chosen packages
    base = {p.name: p for p in installed}

    def is_satisfied(rel: dict) -> bool:
        name, ver = rel["name"], rel.get("version")
        if name in chosen and _satisfies(chosen[name].version, ver):
            return True
        return any(_satisfies(v, ver) for v in provided.get(name, ()))

    def pick(rel: dict) -> Package | None:
        for pkg in index.candidates(rel["name"]):
            if _satisfies(pkg.version, rel.get("version")):
                return pkg
        provs = [
            p for p, v in index.providers.get(rel["name"], ()) if _satisfies(v, rel.get("version"))
        ]
        provs = [p for p in provs if p.name not in exclude]
        if not provs:
            return None
        provs.sort(
            key=lambda p: (
                prefer.index(p.name) if p.name in prefer else len(prefer),
                _PRIORITY.get(p.priority, 9),
                p.name,
            )
        )
        return provs[0]

    def choose(pkg: Package) -> None:
        chosen[pkg.name] = pkg
        for group in _relations(pkg.provides):
            for rel in group:
                provided.setdefault(rel["name"], []).append(
                    rel["version"][1] if rel.get("version") else ""
                )
        queue.append(pkg)

    queue: list[Package] = []
    for pkg in base.values():
        choose(pkg)
    queue.clear()  # what is installed already has its dependencies
    for root in roots:
        cands = index.candidates(root)
        if not cands:
            raise NotFound(f"package {root!r} is not in the index for {index.arch}")
        if root not in chosen:
            choose(cands[0])
    while queue:
        pkg = queue.pop(0)
        for group in _relations(f"{pkg.pre_depends}, {pkg.depends}"):
            group = [r for r in group if r.get("arch") is None or _arch_ok(r["arch"], index.arch)]
            if not group or any(r["name"] in exclude for r in group):
                continue
            if any(is_satisfied(r) for r in group):
                continue
            for rel in group:
                found = pick(rel)
                if found is not None:
                    if found.name in chosen:
                        raise InvalidInput(
                            f"{pkg.name} needs {_rel_text(group)}, but {found.name} "
                            f"{chosen[found.name].version} was already "
                            f"{'installed' if found.name in base else 'chosen'}"
                        )
                    choose(found)
                    break
            else:
                raise NotFound(
                    f"{pkg.name} {pkg.version} depends on {_rel_text(group)}, which nothing in "
                    f"the index for {index.arch} provides (exclude it in the recipe if it is not needed)"
                )
    return sorted((p for p in chosen.values() if p.name not in base), key=lambda p: p.name)


def _relations(text: str) -> list[list[dict]]:
    text = ", ".join(part for part in (p.strip() for p in text.split(",")) if part)
    return PkgRelation.parse_relations(text) if text else []


def _arch_ok(archs: list, arch: str) -> bool:
    """Architecture restrictions like ``[amd64 !arm64]``."""
    positives = [a for a in archs if a.enabled]
    if positives:
        return any(a.arch == arch for a in positives)
    return not any(a.arch == arch for a in archs if not a.enabled)


def _rel_text(group: list[dict]) -> str:
    def one(r: dict) -> str:
        return r["name"] + (f" ({r['version'][0]} {r['version'][1]})" if r.get("version") else "")

    return " | ".join(one(r) for r in group)


# ---------------------------------------------------------------------------------------------
# .deb files


def deb_cache_dir() -> Path:
    return default_cache_dir() / "debs"


def fetch_deb(mirror: str, pkg: Package, cache_dir: Path | None = None) -> Path:
    """The cached ``.deb`` of ``pkg`` (``debs/<sha256>.deb``), downloaded and verified if missing.

    A file whose hash is wrong is never kept, so a tampered mirror cannot poison the cache.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", pkg.sha256):
        raise InvalidInput(f"package {pkg.name}: invalid sha256 {pkg.sha256!r}")
    dest = (cache_dir or deb_cache_dir()) / f"{pkg.sha256}.deb"
    if dest.is_file():
        return dest
    url = f"{mirror.rstrip('/')}/{pkg.filename.lstrip('/')}"
    what = f"{pkg.name}_{pkg.version}_{pkg.architecture}.deb"
    return _download(url, dest, pkg.sha256, what=what, size=pkg.size or None)


@dataclass(frozen=True)
class _ArMember:
    name: str
    offset: int
    size: int


def _ar_members(f: BinaryIO, what: str) -> Iterator[_ArMember]:
    if f.read(8) != b"!<arch>\n":
        raise InvalidInput(f"{what}: not a .deb (no ar header)")
    offset = 8
    while True:
        f.seek(offset)
        header = f.read(60)
        if len(header) < 60:
            return
        if header[58:60] != b"`\n":
            raise InvalidInput(f"{what}: corrupt ar member header at byte {offset}")
        name = header[:16].decode("ascii", errors="replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        yield _ArMember(name, offset + 60, size)
        offset += 60 + size + (size & 1)


class _Bounded:
    """A read-only view of ``size`` bytes of ``f`` from its current position."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readable(self) -> bool:
        return True


class _Cursor:
    """One decompressing pass over a data.tar; ``pos`` is the ordinal of the next member."""

    def __init__(self, deb: DebData) -> None:
        self.file = open(deb.path, "rb")  # noqa: SIM115 (closed by close())
        self.file.seek(deb.member.offset)
        self.tar = tarfile.open(fileobj=deb._decompress(self.file), mode="r|")  # noqa: SIM115
        self.pos = 0

    def close(self) -> None:
        self.file.close()


class DebData:
    """Streams members of one ``.deb``'s ``data.tar`` on request, with flat memory.

    A layer asks for members in its sorted order, which is the .deb's own order except where
    merged ``/usr`` moves ``/lib/x`` among ``/usr/lib/y``. So a few cursors (decompressing passes)
    run side by side, each asked only for members ahead of it; a member behind every cursor
    starts a new one (at most :attr:`MAX_CURSORS`, the one furthest behind is dropped).
    """

    MAX_CURSORS = 4

    def __init__(self, path: str | os.PathLike, what: str = "") -> None:
        self.path = os.fspath(path)
        self.what = what or self.path
        with open(self.path, "rb") as f:
            members = [m for m in _ar_members(f, self.what) if m.name.startswith("data.tar")]
        if not members:
            raise InvalidInput(f"{self.what}: no data.tar member")
        self.member = members[0]
        ext = self.member.name[len("data.tar") :]
        if ext not in ("", ".xz", ".zst", ".gz"):
            raise InvalidInput(f"{self.what}: unsupported {self.member.name} (xz, zst, gz or none)")
        self.compression = ext.lstrip(".") or "none"
        self._order: dict[str, int] = {}
        self._cursors: list[_Cursor] = []
        self.passes = 0

    def _decompress(self, f: BinaryIO) -> BinaryIO:
        raw = _Bounded(f, self.member.size)
        if self.compression == "xz":
            return lzma.LZMAFile(raw)
        if self.compression == "gz":
            return gzip.GzipFile(fileobj=raw)
        if self.compression == "zst":
            return zstandard.ZstdDecompressor().stream_reader(raw)
        return raw

    def _pass(self) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        cur = _Cursor(self)
        try:
            for ti in cur.tar:
                yield cur.tar, ti
        except (tarfile.TarError, lzma.LZMAError, OSError, EOFError) as e:
            raise InvalidInput(f"{self.what}: cannot read {self.member.name}: {e}") from None
        finally:
            cur.close()

    def members(self) -> Iterator[tarfile.TarInfo]:
        """One streaming pass over the members (metadata only); remembers their order."""
        self._order = {}
        for i, (_tar, ti) in enumerate(self._pass()):
            self._order.setdefault(ti.name, i)
            yield ti

    def open_member(self, name: str) -> BinaryIO:
        """A reader of member ``name``'s content, valid until this .deb is asked for another."""
        if not self._order:
            for _ in self.members():
                pass
        target = self._order.get(name)
        if target is None:
            raise NotFound(f"{self.what}: no file {name!r} in {self.member.name}")
        ahead = [c for c in self._cursors if c.pos <= target]
        if ahead:
            cur = max(ahead, key=lambda c: c.pos)
        else:
            if len(self._cursors) >= self.MAX_CURSORS:
                oldest = min(self._cursors, key=lambda c: c.pos)
                oldest.close()
                self._cursors.remove(oldest)
            cur = _Cursor(self)
            self._cursors.append(cur)
            self.passes += 1
        try:
            while (ti := cur.tar.next()) is not None:
                cur.pos += 1
                if cur.pos - 1 == target:
                    f = cur.tar.extractfile(ti)
                    if f is None:
                        break
                    return f
        except (tarfile.TarError, lzma.LZMAError, OSError, EOFError) as e:
            raise InvalidInput(f"{self.what}: cannot read {self.member.name}: {e}") from None
        raise InvalidInput(f"{self.what}: {name!r} is not a regular file in {self.member.name}")

    def read_files(self, match: Callable[[str], bool], max_size: int = 1 << 20) -> dict[str, bytes]:
        """Contents of the small regular files whose (normalized) path ``match`` accepts.

        For the few files the builder must read itself (CA certificates), never for big ones.
        """
        out: dict[str, bytes] = {}
        for tar, ti in self._pass():
            path = usrmerged(image_path(ti.name))
            if ti.isreg() and match(path):
                if ti.size > max_size:
                    raise InvalidInput(f"{self.what}: /{path} is larger than {max_size} bytes")
                f = tar.extractfile(ti)
                out[path] = f.read() if f is not None else b""
        return out

    def close(self) -> None:
        for c in self._cursors:
            c.close()
        self._cursors = []


def usrmerged(path: str) -> str:
    """``lib/x`` → ``usr/lib/x``: where a file lands on a merged-/usr system."""
    head, sep, _rest = path.partition("/")
    if sep and head in USRMERGE_ALIASES:
        return "usr/" + path
    return path


def deb_entries(data: DebData) -> list[Entry]:
    """The layer entries of a ``.deb``'s files, their content streamed from ``data`` on write.

    Paths are normalized and moved under ``/usr`` for merged ``/usr``; the alias symlinks themselves
    (``/bin`` → ``usr/bin``...) are left to the caller, who knows which aliases exist. Devices and
    fifos, which no container base needs, are skipped.
    """
    out: list[Entry] = []
    dirs: set[str] = set()
    for ti in data.members():
        path = usrmerged(image_path(ti.name, f"path in {data.what}"))
        if not path or (path in USRMERGE_ALIASES) or (ti.isdir() and path in dirs):
            continue  # merged /usr makes /lib/x and /usr/lib/x one directory
        kw = {"uid": ti.uid, "gid": ti.gid}
        if ti.isdir():
            dirs.add(path)
            out.append(Entry.dir(path, ti.mode & 0o7777, **kw))
        elif ti.issym():
            out.append(Entry.symlink(path, ti.linkname, **kw))
        elif ti.islnk():
            target = usrmerged(image_path(ti.linkname, f"hardlink target in {data.what}"))
            out.append(Entry.hardlink(path, target, mode=ti.mode & 0o7777, **kw))
        elif ti.isreg():
            name = ti.name

            def opener(name: str = name) -> BinaryIO:
                return data.open_member(name)

            out.append(Entry(path, "file", ti.mode & 0o7777, size=ti.size, opener=opener, **kw))
        else:
            log.info("%s: skipping %s (not a file, directory or link)", data.what, ti.name)
    return out


def merge_entries(groups: Iterable[tuple[str, list[Entry]]]) -> list[Entry]:
    """Entries of several packages as one tree: shared directories once, conflicts refused.

    A path shipped by two packages as the same kind of link is kept once; two different files at
    one path are refused (dpkg would need a declared ``Replaces``), naming both packages.
    """
    merged: dict[str, tuple[str, Entry]] = {}
    for owner, entries in groups:
        for e in entries:
            prev = merged.get(e.path)
            if prev is None:
                merged[e.path] = (owner, e)
                continue
            other_owner, other = prev
            if e.kind == other.kind == "dir":
                continue
            if (
                e.kind == other.kind
                and e.kind in ("symlink", "hardlink")
                and e.linkname == other.linkname
            ):
                continue
            raise InvalidInput(
                f"/{e.path} is shipped by both {other_owner} ({other.kind}) and {owner} ({e.kind}); "
                "exclude one of them in the recipe"
            )
    aliases = []
    for alias in USRMERGE_ALIASES:
        inside = any(p == f"usr/{alias}" or p.startswith(f"usr/{alias}/") for p in merged)
        if inside and alias not in merged:
            aliases.append(Entry.symlink(alias, f"usr/{alias}"))
    return [e for _o, e in merged.values()] + aliases
