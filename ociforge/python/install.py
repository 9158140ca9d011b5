"""Wheels → layer entries → layers, with PyPA's ``installer`` and no process in the image.

    install_entries(wheel_path, target, bytecode=None) -> [Entry, ...]
    wheel_layers(lock, target, store, compression="gzip", ...) -> [Layer, ...]

``installer`` does what pip does when it installs a wheel (schemes, ``.data`` directories,
``#!python`` shebangs, console scripts, ``INSTALLER``, ``RECORD``); :class:`LayerDestination` is
the destination that, instead of writing files, collects :class:`~ociforge.oci.layer.Entry` objects
placed at the target's paths. There is no temporary tree and no file held in memory: the
wheel's files are streamed from it while the layer is written (``Entry.opener``), so memory stays
flat however big the wheel (torch's 2 GB of ``.so`` files) and however many files it has. Only
what installer generates (scripts, RECORD, INSTALLER) and, with ``bytecode=True``, the modules
to compile are held as bytes.

Bytecode, when asked for (``bytecode=True``), is compiled with this interpreter for the target's
Python version (only possible when the two match: the .pyc format is version-specific) as
*unchecked-hash* pycs (PEP 552): no source mtime inside, so the same wheel gives the same bytes
every time, and Python does not re-validate them at import. :func:`wheel_layers` leaves it out
by default: ``ociforge.build`` writes one bytecode layer for the modules the image imports
(:mod:`ociforge.python.bytecode`) instead of compiling every module of every wheel as pip does.

Layering (:func:`wheel_layers`): a wheel whose file is at least ``big`` bytes (torch, nvidia-*,
scipy) gets a layer of its own; the small platform-specific wheels share one layer and the small
pure-Python wheels another. Entries carry fixed owners, modes and mtimes (``SOURCE_DATE_EPOCH``),
so a wheel installed for the same interpreter and paths always gives the same layer digest, and
a pure-Python wheel's layer is the same blob in the amd64 and the arm64 image (uploaded once).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import posixpath
import sys
import threading
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from installer import install as _install
from installer.destinations import WheelDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry, parse_record_file
from installer.scripts import Script
from installer.sources import WheelFile
from installer.utils import construct_record_file, copyfileobj_with_hashing, fix_shebang

from ..errors import InvalidInput
from ..oci.blobstore import BlobStore
from ..oci.layer import Entry, Layer, image_path, source_date_epoch, write_layer
from ..oci.layercache import memo_key, memoized
from ._pycworker import compile_module
from .bytecode import pyc_path
from .lock import Lock, LockedWheel
from .target import Target
from .wheelcache import fetch
from .wheelzip import SharedZip, WheelZip

INSTALLER_NAME = b"ociforge\n"
BIG_WHEEL = 10 << 20  # wheels this large (compressed) come first, each a layer of its own
# Up to this many wheels, every wheel is a layer; beyond, small ones share layers (container
# runtimes refuse images of more than about 127 layers, and the base has some).
MAX_WHEEL_LAYERS = 64
ANNOTATION = "org.ociforge.wheels"
# The compression level of wheel layers (None: the compressor's default). Deflate at level 5 took
# 21% less CPU than level 6 for the example's 206 MB of wheel tars (zlib-ng: 2.84 s against
# 3.58 s, medians of 5) for 0.3% more bytes (61.8 MB against 61.6 MB); level 4 saved 5% more CPU
# for 2% more bytes. zstd stays at 3: level 2 saved 0.4 s of CPU there for 8% more bytes. Part of
# every wheel layer's memo key: a layer made at another level is another layer.
WHEEL_LEVELS: dict[str, int | None] = {"gzip": 5, "zstd": None, "none": None}


class _Null:
    def write(self, data) -> int:
        return len(data)


# Part of every memo key over compiled bytecode: bump it when compile_pyc's bytes change.
PYC_FORMAT = "marshal-2"


@functools.lru_cache(maxsize=4096)
def compile_pyc(source: bytes, filename: str) -> bytes | None:
    """An unchecked-hash .pyc of ``source`` (None when it does not compile for this Python),
    the same bytes in any process (:func:`ociforge.python._pycworker.compile_module`)."""
    return compile_module(source, filename)[0]


def can_compile_for(target: Target) -> bool:
    return (
        target.implementation == "cp"
        and sys.implementation.name == "cpython"
        and sys.version_info[:2] == target.version_tuple
    )


class LayerDestination(WheelDestination):
    """An ``installer`` destination that yields layer entries at the target's paths."""

    def __init__(
        self, target: Target, wheel: Path, dist: str, bytecode: bool, zf: zipfile.ZipFile
    ) -> None:
        py = f"python{target.version_tuple[0]}.{target.version_tuple[1]}"
        self.schemes = {
            "purelib": image_path(target.site_packages),
            "platlib": image_path(target.site_packages),
            "scripts": image_path(target.bin_dir),
            "data": image_path(target.prefix),
            "headers": image_path(posixpath.join(target.prefix, "include", py, dist)),
        }
        self.target = target
        self.wheel = wheel
        self.bytecode = bytecode
        self.entries: list[Entry] = []
        self._pycs: list[tuple[str, RecordEntry]] = []
        self._zip = zf  # the wheel's open zip (installer reads it too)
        self.shared = SharedZip(wheel, zf)  # and the large members, again, as the layer is written
        self.record: dict[str, tuple[Hash, int]] = {}  # the wheel's RECORD, by member name

    def _dest(self, scheme: str, path: str) -> str:
        root = self.schemes[scheme]
        full = image_path(posixpath.join(root, path), f"path in {self.wheel.name}")
        if full != root and not full.startswith(root + "/"):
            raise InvalidInput(f"{self.wheel.name}: {path!r} would be written outside {root}")
        return full

    def write_file(self, scheme, path, stream, is_executable) -> RecordEntry:
        path = str(path)
        dest = self._dest(scheme, path)
        mode = 0o755 if is_executable else 0o644
        if scheme == "scripts":
            with fix_shebang(stream, self.target.interpreter) as fixed:
                data = fixed.read()
            return self._add_bytes(path, dest, data, mode)
        member = getattr(stream, "name", None)  # zipfile.ZipExtFile: the member's name
        if member and not (self.bytecode and path.endswith(".py")):
            # The file is inflated once, while the layer is written, so the installed wheel is
            # never all in memory: its RECORD line is the wheel's own (the wheel is trusted by
            # its sha256 in the lock), hashed here only when the wheel's RECORD has no sha256
            # for it. A module to compile is read now: its bytecode needs the source.
            size = self._member_size(member)
            known = self.record.get(member)
            if known is not None and known[0].name == "sha256" and known[1] == size:
                hash_ = known[0].value
            else:
                hash_, size = copyfileobj_with_hashing(stream, _Null(), "sha256")
            self.entries.append(
                Entry(dest, "file", mode, size=size, opener=self.shared.later(member))
            )
            return RecordEntry(path, Hash("sha256", hash_), size)
        data = stream.read()
        record = self._add_bytes(path, dest, data, mode)
        if self.bytecode and scheme in ("purelib", "platlib") and path.endswith(".py"):
            self._compile(scheme, path, dest, data)
        return record

    def _member_size(self, member: str) -> int:
        try:
            return self._zip.getinfo(member).file_size
        except KeyError:
            return 0

    def _add_bytes(self, path: str, dest: str, data: bytes, mode: int) -> RecordEntry:
        hash_, size = copyfileobj_with_hashing(io.BytesIO(data), _Null(), "sha256")
        self.entries.append(Entry.file(dest, data, mode))
        return RecordEntry(path, Hash("sha256", hash_), size)

    def _compile(self, scheme: str, path: str, dest: str, source: bytes) -> None:
        pyc = compile_pyc(source, "/" + dest)
        if pyc is None:
            return  # pip skips files that do not compile for this version too
        rel = pyc_path(path)
        hash_, size = copyfileobj_with_hashing(io.BytesIO(pyc), _Null(), "sha256")
        self.entries.append(Entry.file(self._dest(scheme, rel), pyc, 0o644))
        self._pycs.append((scheme, RecordEntry(rel, Hash("sha256", hash_), size)))

    def write_script(self, name, module, attr, section) -> RecordEntry:
        script_name, data = Script(name, module, attr, section).generate(
            self.target.interpreter, "posix"
        )
        return self._add_bytes(script_name, self._dest("scripts", script_name), data, 0o755)

    def finalize_installation(self, scheme, record_file_path, records) -> None:
        def prefix_for_scheme(file_scheme: str) -> str | None:
            if file_scheme == scheme:
                return None
            rel = posixpath.relpath("/" + self.schemes[file_scheme], "/" + self.schemes[scheme])
            return rel + "/"

        record_list = list(records) + self._pycs
        with construct_record_file(record_list, prefix_for_scheme) as stream:
            data = stream.read()
        self.entries.append(Entry.file(self._dest(scheme, record_file_path), data, 0o644))


def _wheel_record(source: WheelFile) -> dict[str, tuple[Hash, int]]:
    out = {}
    rows = source.read_dist_info("RECORD").splitlines()
    for path, hash_, size in parse_record_file(rows):
        if hash_ and size.isdigit():
            try:
                out[path] = (Hash.parse(hash_), int(size))
            except ValueError:
                continue
    return out


def install_entries(wheel: str | Path, target: Target, bytecode: bool | None = None) -> list[Entry]:
    """The layer entries of one wheel installed for ``target`` (RECORD and INSTALLER included).

    ``bytecode=None`` compiles when this interpreter matches the target's version, ``True``
    insists (an error otherwise), ``False`` never compiles.
    """
    wheel = Path(wheel)
    if bytecode is None:
        bytecode = can_compile_for(target)
    elif bytecode and not can_compile_for(target):
        raise InvalidInput(
            f"cannot compile bytecode for Python {target.python} with Python "
            f"{sys.version_info[0]}.{sys.version_info[1]}; build without bytecode"
        )
    try:
        zf = WheelZip(wheel)
        try:
            source = WheelFile(zf)
            source.validate_record(validate_contents=False)
            dest = LayerDestination(target, wheel, source.distribution, bytecode, zf)
            dest.record = _wheel_record(source)
            _install(source, dest, {"INSTALLER": INSTALLER_NAME})
        except BaseException:
            zf.close()
            raise
        if not dest.shared.waiting:  # else closed once the layer has read its large members
            zf.close()
    except (InstallerError, zipfile.BadZipFile, ValueError, KeyError) as e:
        if isinstance(e, InvalidInput):
            raise
        raise InvalidInput(f"cannot install {wheel.name}: {e}") from None
    return dest.entries


@dataclass(frozen=True)
class WheelGroup:
    """Wheels that go into one layer."""

    kind: str  # "big", "platform" or "pure"
    wheels: tuple[LockedWheel, ...]


def plan_layers(lock: Lock, big: int = BIG_WHEEL, most: int = MAX_WHEEL_LAYERS) -> list[WheelGroup]:
    """How :func:`wheel_layers` groups a lock's wheels: big ones, then the small platform wheels,
    then the small pure ones, each wheel a layer of its own. Adding, removing or bumping one
    package then rewrites that package's layer alone, and a push sends it alone (with all the
    small wheels in one layer, adding ``six`` re-sent 1.5 MB of other packages).

    A lock of more than ``most`` wheels puts its small wheels of each kind into buckets picked by
    a hash of the name: stable, so one more package still changes one bucket's layer only.
    """
    bigs = [w for w in lock.packages if (w.size or 0) >= big]
    small = [w for w in lock.packages if (w.size or 0) < big]
    groups = [WheelGroup("big", (w,)) for w in bigs]
    plat = [w for w in small if not w.pure]
    pure = [w for w in small if w.pure]
    if len(lock.packages) <= most:
        groups += [WheelGroup("platform", (w,)) for w in plat]
        groups += [WheelGroup("pure", (w,)) for w in pure]
        return groups
    room = max(2, most - len(bigs))
    for kind, wheels, n in (("platform", plat, room // 2), ("pure", pure, room - room // 2)):
        buckets: dict[int, list[LockedWheel]] = {}
        for w in wheels:
            h = int.from_bytes(hashlib.sha256(w.name.lower().encode()).digest()[:8], "big")
            buckets.setdefault(h % n, []).append(w)
        groups += [WheelGroup(kind, tuple(buckets[b])) for b in sorted(buckets)]
    return groups


def _group_entries(
    group: WheelGroup, paths: dict[str, Path], target: Target, bytecode
) -> list[Entry]:
    entries: list[Entry] = []
    owner: dict[str, str] = {}
    for w in group.wheels:
        for e in install_entries(paths[w.sha256], target, bytecode):
            if e.path in owner:
                raise InvalidInput(
                    f"{w.filename} and {owner[e.path]} both install /{e.path}; they cannot share "
                    f"an image"
                )
            owner[e.path] = w.filename
            entries.append(e)
    return entries


def wheel_layers(
    lock: Lock,
    target: Target | None = None,
    store: BlobStore | None = None,
    compression: str = "gzip",
    *,
    cache=None,
    big: int = BIG_WHEEL,
    bytecode: bool = False,
    offline: bool = False,
    paths: Iterable[Path] | None = None,
    jobs: int | None = None,
) -> list[Layer]:
    """Fetch (from the cache when there) and install ``lock``'s wheels as layers in ``store``.

    ``jobs`` layers are written at once (default: one per CPU). ``bytecode=True`` puts every
    module's .pyc into the layers, as ``pip install`` would (see the module docstring).

    Layers come in a fixed order: big wheels by name, then the small platform wheels, then the
    small pure ones. Each layer's descriptor is annotated with the wheels it holds.
    """
    target = target or lock.target
    if store is None:
        raise InvalidInput("wheel_layers needs a blob store to write the layers into")
    with_pyc = bool(bytecode)
    fetched: dict[str, Path] = {}
    fetching = threading.Lock()

    def by_sha(wheels: tuple[LockedWheel, ...]) -> dict[str, Path]:
        # a layer's wheels are fetched (or ``paths`` read) only when that layer is made: a build
        # whose layers are all remembered reads no wheel, one with a new wheel fetches that one
        if hasattr(paths, "only"):  # fetches (or waits for) the wheels named alone, unlocked:
            # a layer whose wheels are there starts while another layer's are still coming
            return {w.sha256: Path(p) for w, p in zip(wheels, paths.only(wheels), strict=True)}
        with fetching:
            todo = [w for w in wheels if w.sha256 not in fetched]
            if todo and paths is not None:
                fetched.update(
                    (w.sha256, Path(p)) for w, p in zip(lock.packages, paths, strict=True)
                )
            elif todo:
                files = fetch(todo, cache, offline=offline)
                fetched.update((w.sha256, Path(p)) for w, p in zip(todo, files, strict=True))
            return fetched

    level = WHEEL_LEVELS.get(compression)

    def one(group: WheelGroup) -> Layer:
        names = ",".join(f"{w.name}=={w.version}" for w in group.wheels)
        # The layer is a pure function of the wheels' bytes and these settings: a rebuild reuses it.
        # A pure-Python group is the same layer on every platform: its key leaves the platform out.
        where = target.to_json()
        if group.kind == "pure":
            where = {k: v for k, v in where.items() if k not in ("platform", "libc", "variant")}
        key = memo_key(
            "wheels",
            [w.sha256 for w in group.wheels],
            where,
            compression,
            source_date_epoch(),
            with_pyc,
            f"{sys.version} {PYC_FORMAT}" if with_pyc else "",
            *([] if level is None else [f"level {level}"]),  # keys of level-None layers unchanged
        )
        return memoized(
            store,
            key,
            lambda: write_layer(
                _group_entries(group, by_sha(group.wheels), target, bytecode),
                store,
                compression,
                annotations={ANNOTATION: names},
                level=level,
                threads=-1 if compression == "zstd" else 0,
            ),
        )

    # Layers are written side by side: zlib-ng and zstd compress without holding the GIL, so the
    # layers' compression uses every CPU (and, with bytecode=True, overlaps the compiling).
    groups = plan_layers(lock, big)
    workers = max(1, min(len(groups), jobs or (os.cpu_count() or 2)))
    if workers == 1:
        return [one(g) for g in groups]
    # The biggest layers start first (the longest sets the length); the order of the layers and
    # of the errors raised stays the plan's.
    first = sorted(range(len(groups)), key=lambda i: -sum(w.size or 0 for w in groups[i].wheels))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ociforge-layer") as pool:
        made = {i: pool.submit(one, groups[i]) for i in first}
        return [made[i].result() for i in range(len(groups))]
