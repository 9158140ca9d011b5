"""The build's library check: every shared library the image's Python packages need is there.

For each ELF file a platform's wheels install (extension modules and the libraries beside them,
``numpy.libs/`` ...), its ``DT_NEEDED`` names are resolved the way the dynamic loader will in the
image: ``DT_RPATH`` (when there is no ``DT_RUNPATH``), ``LD_LIBRARY_PATH`` (the image sets none),
``DT_RUNPATH``, then the directories of the base's ``/etc/ld.so.conf`` and the default ones
(``/lib/<triplet>``, ``/usr/lib/<triplet>``, ``/lib``, ``/usr/lib``), ``$ORIGIN`` expanded,
symlinks followed, over the base's files (:mod:`ociforge.bases.basefiles`) and the wheels'.
A name that another of the wheels' libraries carries as its soname or file name counts as found
too: the loader reuses a library already loaded by that name (torch's CUDA wheels rely on it).

A library nothing provides fails the build when a module the server imports at start needs it
(the wheels of the top-level packages the startup imports begin with, and the wheels those
require), naming each library and the Debian package that ships it, from the suite's signed
``Contents`` index (fetched only then); elsewhere it is one warning line each. For CUDA images the
NVIDIA driver's libraries are the host's (:data:`NVIDIA_DRIVER_LIBRARIES`).

Nothing here changes a layer: the check only reads (the wheels' ELF facts are kept in the cache
by the wheel's sha256, the base's names by its layer digests, so a rebuild reads neither; a
build with a registry cache keeps the facts there too, as records: see
:func:`ociforge.builder.cachestep.wheel_facts`).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..bases.basefiles import TRIPLETS, BaseFiles, Tree, base_files
from ..bases.contents import mirror_of, packages_for
from ..bases.syspackages import overlay
from ..cachedir import default_cache_dir
from ..errors import BuildError, InvalidInput
from ..fsutil import atomic_write
from ..oci.image import Image
from ..oci.layer import image_path
from ..python.elf import read_elf
from ..python.lock import Lock
from ..python.target import Target
from ..python.wheelzip import WheelZip

# What the NVIDIA container toolkit mounts into a container from the host's driver, for the
# capabilities CUDA images ask for (NVIDIA_DRIVER_CAPABILITIES=compute,utility): the
# ``utility_libs`` and ``compute_libs`` of libnvidia-container's src/nvc_info.c
# (https://github.com/NVIDIA/libnvidia-container/blob/main/src/nvc_info.c). Prefixes: a name
# matches itself or itself followed by ".<version>" (libcuda.so.1, libnvidia-nvvm.so.4).
NVIDIA_DRIVER_LIBRARIES = (
    # utility_libs
    "libnvidia-ml.so",
    "libnvidia-cfg.so",
    "libnvidia-nscq.so",
    # compute_libs
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-opencl.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-allocator.so",
    "libnvidia-compiler.so",
    "libnvidia-pkcs11.so",
    "libnvidia-pkcs11-openssl3.so",
    "libnvidia-nvvm.so",
    "libnvidia-tileiras.so",
)

EXPECTED_MACHINE = {"amd64": 62, "arm64": 183, "386": 3, "arm": 40, "ppc64le": 21, "s390x": 22}
EXPECTED_MACHINE |= {"riscv64": 243}

_SHARED = re.compile(r"\.so(\.[0-9][0-9.]*)?$")
_FORMAT = 2  # of the cached per-wheel record


def driver_provided(name: str, variant: str) -> bool:
    """Whether the container host's NVIDIA driver provides ``name`` in a ``variant`` image."""
    if not variant.startswith("cu"):
        return False
    return any(name == p or name.startswith(p + ".") for p in NVIDIA_DRIVER_LIBRARIES)


@dataclass(frozen=True)
class WheelElf:
    """One ELF file a wheel installs: its path relative to site-packages and what it needs."""

    path: str
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    soname: str | None
    machine: int


@dataclass
class WheelFacts:
    files: list[str]  # every file, relative to site-packages
    elfs: list[WheelElf]
    tops: list[str]  # its top-level packages and modules
    unreadable: list[str]
    requires: list[str] = field(default_factory=list)  # its METADATA's Requires-Dist


@dataclass(frozen=True)
class Missing:
    module: str  # the ELF file, relative to site-packages
    library: str
    startup: bool
    wheel: str


def _site_rel(name: str) -> str | None:
    """Where a wheel member lands relative to site-packages (None: elsewhere, or metadata)."""
    top, _, rest = name.partition("/")
    if top.endswith(".dist-info"):
        return None
    if top.endswith(".data"):
        scheme, _, rest = rest.partition("/")
        return rest if scheme in ("purelib", "platlib") and rest else None
    return name


def wheel_facts(path: Path) -> WheelFacts:
    """The files and ELF facts of a wheel, read through its zip (members streamed)."""
    files, elfs, unreadable, tops, requires = [], [], [], set(), []
    with WheelZip(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if re.fullmatch(r"[^/]+\.dist-info/METADATA", info.filename):
                text = zf.read(info).decode("utf-8", errors="replace").split("\n\n", 1)[0]
                requires += re.findall(r"^Requires-Dist:\s*(.+?)\s*$", text, re.M)
            rel = _site_rel(info.filename)
            if rel is None:
                continue
            try:
                rel = image_path(rel)
            except InvalidInput:
                continue
            files.append(rel)
            top = rel.split("/")[0]
            if not top.endswith(".libs"):
                tops.add(top.split(".")[0] if "/" not in rel else top)
            if not _SHARED.search(rel.rpartition("/")[2]):
                continue
            try:
                with zf.open(info) as member:
                    elf = read_elf(member, f"{path.name}:{info.filename}")
            except InvalidInput:
                unreadable.append(rel)
                continue
            if elf is not None:
                elfs.append(
                    WheelElf(rel, elf.needed, elf.rpath, elf.runpath, elf.soname, elf.machine)
                )
    return WheelFacts(sorted(files), elfs, sorted(tops), unreadable, requires)


FACTS_FORMAT = _FORMAT


def facts_json(facts: WheelFacts) -> dict:
    """A wheel's facts as JSON (the local cache's record, and the registry cache's)."""
    return {
        "format": _FORMAT,
        "files": facts.files,
        "elfs": [[e.path, e.needed, e.rpath, e.runpath, e.soname, e.machine] for e in facts.elfs],
        "tops": facts.tops,
        "unreadable": facts.unreadable,
        "requires": facts.requires,
    }


def _strs(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} is not a list of strings")
    return value


def facts_from_json(obj) -> WheelFacts:
    """The facts :func:`facts_json` wrote; ``ValueError`` for anything else (it may come from a
    registry cache: hostile input)."""
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        raise ValueError("not wheel facts of this format")
    elfs = []
    if not isinstance(obj.get("elfs"), list):
        raise ValueError("elfs is not a list")
    for e in obj["elfs"]:
        if not (isinstance(e, list) and len(e) == 6):
            raise ValueError("an ELF record is not [path, needed, rpath, runpath, soname, machine]")
        path, needed, rpath, runpath, soname, machine = e
        if not isinstance(path, str) or not (soname is None or isinstance(soname, str)):
            raise ValueError("an ELF record's path or soname is not a string")
        if not isinstance(machine, int) or isinstance(machine, bool):
            raise ValueError("an ELF record's machine is not a number")
        elfs.append(
            WheelElf(path, tuple(_strs(needed, "needed")), tuple(_strs(rpath, "rpath")),
                     tuple(_strs(runpath, "runpath")), soname, machine)
        )  # fmt: skip
    return WheelFacts(
        _strs(obj.get("files"), "files"),
        elfs,
        _strs(obj.get("tops"), "tops"),
        _strs(obj.get("unreadable"), "unreadable"),
        _strs(obj.get("requires"), "requires"),
    )


def facts_of(path: Path, sha256: str | None) -> WheelFacts:
    """The facts of the wheel at ``path``, kept on this machine by its ``sha256``."""
    return _facts_cached(path, sha256)


def _facts_cached(path: Path, sha256: str | None) -> WheelFacts:
    if not sha256:
        return wheel_facts(path)
    cache = default_cache_dir() / "elf" / f"{sha256}.json"
    if cache.is_file():
        with contextlib.suppress(OSError, ValueError):
            return facts_from_json(json.loads(cache.read_text()))
    facts = wheel_facts(path)
    with contextlib.suppress(OSError, InvalidInput):
        atomic_write(cache, json.dumps(facts_json(facts), separators=(",", ":")), mkdir=True)
    return facts


def search_dirs(base: BaseFiles, arch: str) -> list[str]:
    """The directories the loader searches after the object's own paths: ld.so.conf's, then
    the trusted defaults (multiarch first, as Debian's loader has them)."""
    triplet = TRIPLETS.get(arch)
    defaults = [f"/lib/{triplet}", f"/usr/lib/{triplet}"] if triplet else []
    return list(dict.fromkeys([*base.conf_dirs(), *defaults, "/lib", "/usr/lib"]))


def _expand(entry: str, origin: str, arch: str) -> str | None:
    triplet = TRIPLETS.get(arch, "")
    platform = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    for token, value in (("ORIGIN", origin), ("LIB", f"lib/{triplet}"), ("PLATFORM", platform)):
        entry = entry.replace("${" + token + "}", value).replace("$" + token, value)
    if "$" in entry or not entry.startswith("/"):
        return None  # an unknown token, or relative to the working folder: not searched here
    return entry


def _requires(facts: WheelFacts, env: dict[str, str]) -> set[str]:
    """The distributions a wheel requires on the target (no extras)."""
    out = set()
    for text in facts.requires:
        with contextlib.suppress(InvalidRequirement, UndefinedEnvironmentName, ValueError):
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                out.add(canonicalize_name(req.name))
    return out


def _startup_wheels(target: Target, facts: dict[str, WheelFacts], roots: Iterable[str]) -> set[str]:
    """The wheels (by normalized name) whose modules load at start: those holding a top-level
    package the startup imports begin with, and, transitively, the wheels they require."""
    tops = {r.split(".")[0] for r in roots}
    todo = [n for n, f in facts.items() if tops & set(f.tops)]
    env = target.marker_environment()
    out: set[str] = set()
    while todo:
        n = todo.pop()
        if n in out or n not in facts:
            continue
        out.add(n)
        todo += sorted(_requires(facts[n], env) - out)
    return out


def find_missing(
    target: Target,
    lock: Lock,
    wheel_files: list[Path],
    base: BaseFiles,
    roots: Iterable[str],
    facts: dict[str, WheelFacts] | None = None,
) -> tuple[list[Missing], list[str]]:
    """The libraries no layer provides, and notes (unreadable or foreign-architecture files).
    ``facts`` (by normalized wheel name): the wheels' facts, known already (then
    ``wheel_files`` is not read)."""
    arch = target.platform.architecture
    site = image_path(target.site_packages)
    if facts is None:
        by_file = {w.filename: w for w in lock.packages}
        facts = {}
        for path in wheel_files:
            path = Path(path)
            w = by_file.get(path.name)
            name = canonicalize_name(w.name if w else path.name.split("-")[0])
            facts[name] = _facts_cached(path, w.sha256 if w else None)
    files = set(base.files)
    loaded: set[str] = set()
    for f in facts.values():
        files.update(f"{site}/{rel}" for rel in f.files)
        for e in f.elfs:
            loaded.add(e.path.rpartition("/")[2])
            if e.soname:
                loaded.add(e.soname)
    tree = Tree(files, base.links)
    defaults = search_dirs(base, arch)
    startup = _startup_wheels(target, facts, roots)
    machine = EXPECTED_MACHINE.get(arch)
    missing: list[Missing] = []
    notes: list[str] = []
    for name, f in sorted(facts.items()):
        notes += [f"{name}: {rel} is not a readable ELF file (not checked)" for rel in f.unreadable]
        for e in f.elfs:
            if machine is not None and e.machine != machine:
                notes.append(f"{name}: {e.path} is not for {arch} (ELF machine {e.machine})")
                continue
            origin = f"/{site}/{posixpath.dirname(e.path)}".rstrip("/")
            own = [*(e.rpath if not e.runpath else ()), *e.runpath]
            dirs = [d for d in (_expand(p, origin, arch) for p in own) if d] + defaults
            for lib in e.needed:
                if "/" in lib:
                    found = tree.resolve(lib if lib.startswith("/") else f"{origin}/{lib}")
                else:
                    found = next((d for d in dirs if tree.resolve(f"{d}/{lib}")), None)
                if found or lib in loaded or driver_provided(lib, target.variant):
                    continue
                missing.append(Missing(e.path, lib, name in startup, name))
    return missing, notes


def _hint(packages: dict[str, str], libs: Iterable[str]) -> str:
    """``: add system_packages=["libgl1"]``: the Debian packages that ship ``libs``."""
    pkgs = sorted({packages[lib] for lib in libs if lib in packages})
    if not pkgs:
        return ""
    return ": add system_packages=[" + ", ".join(f'"{p}"' for p in pkgs) + "]"


def _remedy(packages: dict[str, str], libs: Iterable[str]) -> str:
    """What to do about all of ``libs`` at once: the system packages that ship them."""
    hint = _hint(packages, libs)
    if not hint:
        return "add the Debian packages that ship them to system_packages (--system-package)"
    return hint[2:] + " (the Debian packages that ship them; --system-package on the CLI)"


def debian_packages(base_image: Image, arch: str, libs: Iterable[str]) -> dict[str, str]:
    """The Debian packages that ship ``libs``, for an ociforge (Debian) base; {} when unknown."""
    labels = base_image.config.config.labels
    suite = labels.get("dev.ociforge.base.suite")
    if not suite:
        return {}
    try:
        return packages_for(libs, mirror_of(labels.get("dev.ociforge.base.recipe")), suite, arch)
    except Exception as e:  # noqa: BLE001 - a hint only: the report stands without it
        print(f"(no Debian package lookup: {e})", file=sys.stderr)
        return {}


def check_libraries(
    target: Target,
    lock: Lock,
    wheel_files: list[Path],
    base_image: Image,
    roots: Iterable[str],
    *,
    offline: bool = False,
    lookup: Callable[[Image, str, Iterable[str]], dict[str, str]] | None = None,
    warn: Callable[[str], None] | None = None,
    provided: BaseFiles | None = None,
    facts: dict[str, WheelFacts] | None = None,
) -> list[Missing]:
    """Fail the build (:class:`BuildError`) when a module imported at start needs a library no
    layer provides; warn (one line each) for the others. Returns what was missing.
    ``provided``: the files of the system-packages layer above the base (they count as the
    base's). ``facts``: the wheels' facts by normalized name, when known (see
    :func:`find_missing`)."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    base = base_files(base_image)
    if provided is not None:
        base = overlay(base, provided)
    missing, notes = find_missing(target, lock, wheel_files, base, roots, facts)
    for note in notes:
        warn(f"warning: {target.platform}: {note}")
    if not missing:
        return missing
    arch = target.platform.architecture
    libs = sorted({m.library for m in missing})
    packages: dict[str, str] = {}
    if not offline:
        packages = (lookup or debian_packages)(base_image, arch, libs)
    fatal = [m for m in missing if m.startup]
    for m in missing:
        if not m.startup:
            warn(
                f"warning: {target.platform}: {m.module} needs {m.library}, which no layer "
                f"provides (not imported at start){_hint(packages, [m.library])}"
            )
    if fatal:
        lines = "\n".join(
            f"  {m.module} needs {m.library}{_hint(packages, [m.library])}" for m in fatal
        )
        raise BuildError(
            f"{target.platform}: {len(fatal)} shared librar{'y' if len(fatal) == 1 else 'ies'} "
            f"that modules imported at start need are in no layer of the image:\n{lines}\n"
            f"{_remedy(packages, [m.library for m in fatal])}, use a base that has them, or "
            "build with check_libraries=False"
        )
    return missing
