"""System packages: Debian packages a model names, in one layer directly above its base.

    build(model, system_packages=["libgl1", "libglib2.0-0"])   # or --system-package, or
                                                              # [tool.ociforge] system_packages

Many wheels load a system library at import (``opencv-python`` needs ``libGL.so.1``). Other
tools run ``apt-get`` inside an emulated build for that; ociforge resolves the names the way it
resolves a base's packages (:mod:`ociforge.bases.debian`: the signed ``InRelease``, hashed
indexes, hashed ``.deb`` files) against the base's own Debian suite and each platform's
architecture, leaving out what the base already holds, and runs nothing.

* :func:`plan` turns the names into one :class:`SystemLock` per platform: from the build's lock
  file when it records them, else resolved (online) or remembered (offline). Every platform is
  resolved before any ``.deb`` is downloaded, so an unknown package, or one with no build for a
  platform, fails first, naming the package, the suite and the platform.
* :func:`system_layer` writes the packages' files as one layer, with what the base build writes
  instead of maintainer scripts (a dpkg record per package under ``/var/lib/dpkg/status.d``, so
  scanners see them). Same packages, same layer digest; the layer is memoized like the others,
  and the files it provides are kept for the library check.
* The lock file (``ociforge lock``, ``ociforge fetch``) records them under ``"system-packages"``
  (:data:`LOCK_KEY`), so ``--offline`` builds and bundles carry them.

Which suite: a base built by ociforge says it in its labels (:data:`SUITE_LABEL`), and so can any
other base; a base that does not is refused with what ociforge would need.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import records
from ..cachedir import default_cache_dir
from ..errors import BuildError, InvalidInput, MissingInputs, NotFound
from ..fsutil import atomic_write
from ..oci.blobstore import BlobStore
from ..oci.image import Image, visit_layer_members
from ..oci.layer import Entry, Layer, image_path, write_layer
from ..oci.layercache import memo_key, memoized
from ..oci.platform import Platform
from . import debian
from .base import Recipe, _dpkg_status, lock_for, mirror_for, recipe_named_by_label
from .basefiles import BaseFiles, base_files
from .contents import mirror_of

LABEL = "dev.ociforge.system-packages"  # on the model image: the names asked for, sorted
SUITE_LABEL = "dev.ociforge.base.suite"
RECIPE_LABEL = "dev.ociforge.base.recipe"
LOCK_KEY = "system-packages"
FORMAT = "1"  # of the layer and the cached records: bump when their bytes change
STATUS_DIR = "var/lib/dpkg/status.d"
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def names_of(packages: Iterable[str] | str | None) -> tuple[str, ...]:
    """The package names asked for: sorted, once each, each a valid Debian package name (the
    order they were given in changes no digest)."""
    if packages is None:
        return ()
    if isinstance(packages, str):
        packages = packages.replace(",", " ").split()
    out = set()
    for raw in packages:
        name = str(raw).strip()
        if not _NAME.fullmatch(name):
            raise InvalidInput(
                f"system package {name[:80]!r} is not a Debian package name "
                "(lowercase letters, digits, '+', '-', '.')"
            )
        out.add(name)
    return tuple(sorted(out))


# ---------------------------------------------------------------------------------------------
# Which Debian a base is


@dataclass(frozen=True)
class Source:
    """What a base's system packages are resolved against."""

    suite: str
    mirror: str
    components: tuple[str, ...]
    image: Image | None = field(repr=False)
    what: str  # the base, for messages
    records: tuple[tuple[str, str, str], ...] | None = None  # installed, when known without image

    def installed(self) -> list[tuple[str, str, str]]:
        """(name, version, architecture) of what the base holds."""
        if self.records is not None:
            return list(self.records)
        return installed(self.image) if self.image is not None else []


def recipe_source(recipe: Recipe, platform: Platform, *, offline: bool = False) -> Source:
    """The source of the base a recipe builds, from the recipe and its lock (no image needed:
    the base holds exactly the lock's packages, as its dpkg records say)."""
    lock = lock_for(recipe, platform.debian_arch, offline=offline)
    records = tuple((p.name, p.version, p.architecture) for p in lock.packages)
    return Source(
        recipe.suite,
        mirror_for(recipe),
        recipe.components,
        None,
        f"the base {recipe.name}",
        records,
    )


def source_for(image: Image, name: str, platform: Platform) -> Source:
    """The Debian suite and mirror of a base, from its labels; refused when they do not say."""
    labels = image.config.config.labels
    what = f"the base {name or image.digest}"
    suite = labels.get(SUITE_LABEL, "").strip()
    if not suite:
        raise BuildError(
            f"system_packages: {what} ({platform}) does not say which Debian suite it is. "
            f"ociforge resolves system packages against the base's Debian suite and a Debian "
            f"mirror: build on ociforge's default base, or on a Debian base labelled "
            f"{SUITE_LABEL}=SUITE (e.g. bookworm; the mirror is $OCIFORGE_DEBIAN_MIRROR, else "
            f"{debian.DEFAULT_MIRROR})"
        )
    if not _NAME.fullmatch(suite):
        raise InvalidInput(f"{what}: label {SUITE_LABEL}={suite[:80]!r} is not a suite name")
    recipe_name = labels.get(RECIPE_LABEL)
    recipe = recipe_named_by_label(recipe_name)
    components: tuple[str, ...] = ("main",)
    if recipe and recipe.suite == suite:  # a recipe not here: the suite's main component
        components = recipe.components
    return Source(suite, mirror_of(recipe_name), components, image, what)


def _parse_status(text: str) -> list[tuple[str, str, str]]:
    """(name, version, architecture) of the installed packages of a dpkg status text."""
    out = []
    for para in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        status = fields.get("Status", "install ok installed").split()
        if "Package" in fields and status[-1:] == ["installed"]:
            out.append(
                (fields["Package"], fields.get("Version", ""), fields.get("Architecture", ""))
            )
    return out


def installed(image: Image) -> list[tuple[str, str, str]]:
    """What the base's dpkg records say is installed (``/var/lib/dpkg/status`` and
    ``status.d/*``, as ociforge and distroless bases keep them): read in one pass over its
    layers, once; kept in the cache by the layers' digests."""
    key = hashlib.sha256(
        "\n".join(d.digest for d in image.layers).encode() + f"\n{FORMAT}".encode()
    ).hexdigest()
    path = default_cache_dir() / "system-packages" / "installed" / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        return [tuple(x) for x in json.loads(path.read_text())]
    names = base_files(image).files
    if not any(n == "var/lib/dpkg/status" or n.startswith(STATUS_DIR + "/") for n in names):
        return []
    texts: dict[str, str] = {}

    def visit(_desc, tar: tarfile.TarFile, ti: tarfile.TarInfo) -> None:
        p = image_path(ti.name) if ti.name.strip("./") else ""
        dpkg = p == "var/lib/dpkg/status" or p.startswith(STATUS_DIR + "/")
        if dpkg and ti.isreg() and ti.size < (64 << 20):
            f = tar.extractfile(ti)
            texts[p] = f.read().decode("utf-8", errors="replace") if f else ""

    visit_layer_members(image, visit, "the base")
    found = {}
    for p in sorted(texts):
        if p in names:  # not hidden by a later layer's whiteout
            for rec in _parse_status(texts[p]):
                found[rec[0]] = rec
    out = sorted(found.values())
    with contextlib.suppress(OSError, InvalidInput):
        atomic_write(path, json.dumps(out), mkdir=True)
    return out


def _installed_packages(
    records: Iterable[tuple[str, str, str]], index: debian.PackageIndex
) -> list[debian.Package]:
    """The base's packages as the resolver sees them: with what the index says they provide."""
    out = []
    for name, version, arch in records:
        cands = index.candidates(name)
        same = next((c for c in cands if c.version == version), cands[0] if cands else None)
        out.append(
            debian.Package(
                name, version, arch or index.arch, "", "", 0,
                provides=same.provides if same else "",
            )
        )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Locks


@dataclass(frozen=True)
class SystemLock:
    """The system packages of one architecture: the names asked for and what they resolved to
    (dependencies included, less what the base holds)."""

    architecture: str
    suite: str
    mirror: str
    date: int  # the signed InRelease's date (for the record; the layer's time is the build's)
    requested: tuple[str, ...]
    packages: tuple[debian.Package, ...]

    def to_json(self) -> dict:
        return {
            "architecture": self.architecture,
            "suite": self.suite,
            "mirror": self.mirror,
            "date": self.date,
            "requested": list(self.requested),
            "packages": [p.lock_json() for p in self.packages],
        }

    @classmethod
    def from_json(cls, obj: dict, where: str) -> SystemLock:
        try:
            lock = cls(
                architecture=str(obj["architecture"]),
                suite=str(obj["suite"]),
                mirror=str(obj.get("mirror", debian.DEFAULT_MIRROR)),
                date=int(obj["date"]),
                requested=names_of(obj["requested"]),
                packages=tuple(debian.Package.from_lock(p) for p in obj["packages"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidInput(f"{where}: invalid {LOCK_KEY} entry: {e}") from None
        for p in lock.packages:
            if not re.fullmatch(r"[0-9a-f]{64}", p.sha256):
                raise InvalidInput(f"{where}: {LOCK_KEY}: {p.name}: invalid sha256 {p.sha256!r}")
        return lock

    def matches(self, arch: str, requested: Sequence[str], suite: str | None = None) -> bool:
        return (
            self.architecture == arch
            and self.requested == tuple(requested)
            and (suite is None or self.suite == suite)
        )

    def deb_names(self) -> list[str]:
        return [f"{p.name}_{p.version}_{p.architecture}.deb" for p in self.packages]


def read_locks(path: str | os.PathLike | None) -> list[SystemLock]:
    """The system-package entries of a lock file (none when it has no such section)."""
    if path is None or not Path(path).is_file():
        return []
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidInput(f"{path}: not a valid lock file ({e})") from None
    entries = doc.get(LOCK_KEY, []) if isinstance(doc, dict) else []
    if not isinstance(entries, list):
        raise InvalidInput(f"{path}: {LOCK_KEY} must be a list")
    return [SystemLock.from_json(e, str(path)) for e in entries if isinstance(e, dict)]


def lock_section(locks: Iterable[SystemLock], keep: Iterable[SystemLock] = ()) -> list[dict]:
    """The lock file's ``system-packages`` list: ``locks``, and those of ``keep`` they do not
    replace (same architecture, suite and names), in a stable order."""
    new = list(locks)
    kept = [
        k for k in keep if not any(n.matches(k.architecture, k.requested, k.suite) for n in new)
    ]
    out = sorted(new + kept, key=lambda lk: (lk.architecture, lk.suite, lk.requested))
    return [lk.to_json() for lk in out]


def _find(
    locks: Iterable[SystemLock], arch: str, requested: Sequence[str], suite: str | None = None
) -> SystemLock | None:
    return next((lk for lk in locks if lk.matches(arch, requested, suite)), None)


def _memory_path(arch: str, suite: str, requested: Sequence[str]) -> Path:
    key = hashlib.sha256(json.dumps([FORMAT, arch, suite, list(requested)]).encode()).hexdigest()
    return default_cache_dir() / "system-packages" / "resolved" / f"{key}.json"


def _remember(lock: SystemLock) -> None:
    """What an online build resolved, for an offline build with no lock file."""
    with contextlib.suppress(OSError, InvalidInput):
        path = _memory_path(lock.architecture, lock.suite, lock.requested)
        atomic_write(path, json.dumps(lock.to_json(), sort_keys=True), mkdir=True)


def _recall(arch: str, suite: str, requested: Sequence[str]) -> SystemLock | None:
    path = _memory_path(arch, suite, requested)
    with contextlib.suppress(OSError, ValueError, InvalidInput):
        return SystemLock.from_json(json.loads(path.read_text()), str(path))
    return None


# ---------------------------------------------------------------------------------------------
# Resolving


_INDEXES: dict[tuple, debian.PackageIndex] = {}  # the last few parsed (seconds each, ~80 MB)
_KEEP_INDEXES = 2


def _index(
    release: debian.Release, arch: str, components: tuple[str, ...], where: str
) -> debian.PackageIndex:
    """The verified index of ``arch``, parsed once per process for the same signed release."""
    key = (release.mirror, release.suite, release.date, arch, components)
    index = _INDEXES.pop(key, None)
    if index is None:
        try:
            index = debian.fetch_index(release, arch, components)
        except NotFound as e:
            raise NotFound(f"system_packages: {where}: {e}") from None
    _INDEXES[key] = index  # the most recent last
    while len(_INDEXES) > _KEEP_INDEXES:
        del _INDEXES[next(iter(_INDEXES))]
    return index


def resolve(
    names: Sequence[str],
    source: Source,
    platform: Platform,
    *,
    keyring: str = debian.DEFAULT_KEYRING,
) -> SystemLock:
    """Resolve ``names`` for one platform against the base's suite (signed index), their
    dependencies included and what the base holds left out. Downloads no ``.deb``."""
    arch = platform.debian_arch
    where = f"Debian {source.suite} ({', '.join(source.components)}) for {arch} ({platform})"
    release = debian.fetch_release(source.mirror, source.suite, keyring)
    index = _index(release, arch, source.components, where)
    for name in names:
        if index.candidates(name):
            continue
        providers = sorted({p.name for p, _v in index.providers.get(name, ())})
        if providers:
            raise NotFound(
                f"system package {name!r} is a virtual package in {where}: name one of the "
                f"packages that provide it ({', '.join(providers[:10])})"
            )
        raise NotFound(
            f"system package {name!r} is not in {where}: no such package, or none built for "
            f"{arch}; nothing was downloaded"
        )
    base = _installed_packages(source.installed(), index)
    try:
        pkgs = debian.resolve(index, names, installed=base)
    except (NotFound, InvalidInput) as e:
        raise BuildError(f"system_packages {', '.join(names)} for {platform}: {e}") from None
    return SystemLock(arch, source.suite, source.mirror, release.date, tuple(names), tuple(pkgs))


def plan(
    packages: Iterable[str] | str | None,
    bases: Mapping[Platform, tuple[Image, str]],
    *,
    lock: str | os.PathLike | None = None,
    offline: bool = False,
    keyring: str = debian.DEFAULT_KEYRING,
) -> dict[Platform, SystemLock]:
    """The system packages of each platform: recorded in the ``lock`` file, else resolved
    (remembered, offline). Every platform is planned before anything is downloaded; offline,
    what is missing (a resolution, a ``.deb``) is listed in one :class:`MissingInputs`."""
    names = names_of(packages)
    if not names:
        return {}
    recorded = read_locks(lock)
    out: dict[Platform, SystemLock] = {}
    missing: list[str] = []
    for p, (img, bname) in bases.items():
        src = source_for(img, bname, p)
        arch = p.debian_arch
        found = _find(recorded, arch, names, src.suite)
        if found is None and offline:
            found = _recall(arch, src.suite, names)
        if found is None:
            if offline:
                missing.append(
                    f"system packages {', '.join(names)} for {p} (Debian {src.suite}) in a lock "
                    f"file, or remembered from an online build with this cache"
                )
                continue
            found = resolve(names, src, p, keyring=keyring)
            _remember(found)
        out[p] = found
    if offline:
        missing += missing_debs(out.values())
    if missing:
        plats = ",".join(str(p) for p in bases)
        pkg_args = " ".join(f"--system-package {n}" for n in names)
        raise MissingInputs(
            missing,
            f"ociforge fetch --platform {plats} {pkg_args} --lock {lock or 'ociforge.lock'}",
        )
    return out


def missing_recorded(
    platforms: Iterable[Platform], lock: str | os.PathLike, names: Sequence[str]
) -> list[str]:
    """Offline, before the bases are read: the platforms whose ``names`` the lock file does not
    record, and the recorded packages' ``.deb`` files the cache lacks."""
    if not names:
        return []
    recorded = read_locks(lock)
    out, found = [], []
    for p in platforms:
        hit = _find(recorded, p.debian_arch, names)
        if hit is None:
            out.append(f"system packages {', '.join(names)} for {p} in the lock {lock}")
        else:
            found.append(hit)
    return out + missing_debs(found)


def missing_debs(locks: Iterable[SystemLock]) -> list[str]:
    """The ``.deb`` files of ``locks`` the local cache lacks."""
    cache = debian.deb_cache_dir()
    return [
        f"{p.name}_{p.version}_{p.architecture}.deb (sha256 {p.sha256})"
        for lk in locks
        for p in lk.packages
        if not (cache / f"{p.sha256}.deb").is_file()
    ]


def fetch_debs(lock: SystemLock) -> list[tuple[debian.Package, Path]]:
    """Each package's verified ``.deb`` from the cache, downloaded when missing (from
    ``$OCIFORGE_DEBIAN_MIRROR`` when set, else the mirror the lock was resolved from)."""
    mirror = os.environ.get("OCIFORGE_DEBIAN_MIRROR") or lock.mirror
    return [(p, debian.fetch_deb(mirror, p)) for p in lock.packages]


# ---------------------------------------------------------------------------------------------
# The layer


def _entries(lock: SystemLock, datas: list[tuple[debian.Package, debian.DebData]]) -> list[Entry]:
    """The packages' files as one tree, and a dpkg record each. No ``/lib`` → ``usr/lib``
    alias links: the base has its own, and one here would hide a base's real ``/lib``."""
    groups = [(d.what, debian.deb_entries(d)) for _p, d in datas]
    merged = [e for e in debian.merge_entries(groups) if e.path not in debian.USRMERGE_ALIASES]
    merged += [Entry.file(f"{STATUS_DIR}/{p.name}", _dpkg_status(p)) for p in lock.packages]
    return merged


def provided_files(entries: Iterable[Entry]) -> BaseFiles:
    """What a layer of ``entries`` provides to the library check: its files and symlinks."""
    out = BaseFiles()
    for e in entries:
        if e.kind in ("file", "hardlink"):
            out.files.add(e.path)
        elif e.kind == "symlink":
            out.links[e.path] = e.linkname
    return out


def overlay(base: BaseFiles, upper: BaseFiles) -> BaseFiles:
    """``base`` with ``upper``'s files and links on top (a path in ``upper`` replaces the base's)."""
    files = (base.files - set(upper.links)) | upper.files
    links = {k: v for k, v in base.links.items() if k not in upper.files} | upper.links
    return BaseFiles(files, links, dict(base.ld_conf))


@dataclass(frozen=True)
class SystemLayer:
    layer: Layer
    provided: BaseFiles = field(repr=False)
    history: str


def _provided_record(data) -> BaseFiles:
    """The files a system-packages record names, checked (it may come from a registry cache)."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("not a list of files")
    links, conf = data.get("links"), data.get("ld_conf", {})
    if not isinstance(links, dict) or not isinstance(conf, dict):
        raise ValueError("links or ld_conf is not an object")
    for what, values in (
        ("files", data["files"]),
        ("links", [*links, *links.values()]),
        ("ld_conf", [*conf, *conf.values()]),
    ):
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"{what} holds something other than strings")
    return BaseFiles.from_json(data)


def system_layer(lock: SystemLock, store: BlobStore, compression: str, epoch: int) -> SystemLayer:
    """The layer of ``lock``'s packages (the same packages, compression and time: the same
    digest), memoized; the ``.deb`` files are read (and downloaded) only when it is not."""
    key = memo_key("system-packages", FORMAT, epoch, compression, [p.sha256 for p in lock.packages])
    files_path = default_cache_dir() / "system-packages" / "files" / f"{key}.json"
    history = (
        f"system packages (Debian {lock.suite} {lock.architecture}): {', '.join(lock.requested)}"
        + (f" + {len(lock.packages) - len(lock.requested)} dependencies" if lock.packages else "")
    )
    # the files the layer provides: a record of its own (on this machine, else in the build's
    # registry cache), so a layer found in the cache needs no .deb to say what it holds
    files_key = memo_key("system-packages-files", FORMAT, [p.sha256 for p in lock.packages])
    provided: BaseFiles | None = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        provided = BaseFiles.from_json(json.loads(files_path.read_text()))
    if provided is None:
        provided = records.recall(store, files_key, _provided_record)

    def make() -> Layer:
        nonlocal provided
        debs = fetch_debs(lock)
        datas = [
            (p, debian.DebData(path, f"{p.name}_{p.version}_{p.architecture}.deb"))
            for p, path in debs
        ]
        try:
            entries = _entries(lock, datas)
            provided = provided_files(entries)
            return write_layer(entries, store, compression, epoch=epoch)
        finally:
            for _p, d in datas:
                d.close()

    layer = memoized(store, key, make)
    if provided is None:  # remembered layer, but no file list: read the .debs' headers again
        debs = fetch_debs(lock)
        datas = [(p, debian.DebData(path, p.name)) for p, path in debs]
        try:
            provided = provided_files(_entries(lock, datas))
        finally:
            for _p, d in datas:
                d.close()
    if not files_path.is_file():
        with contextlib.suppress(OSError, InvalidInput):
            record = json.dumps(provided.to_json(), separators=(",", ":"))
            atomic_write(files_path, record, mkdir=True)
    records.keep(store, files_key, provided.to_json())
    return SystemLayer(layer, provided, history)
