"""Which Debian package ships a file: the suite's ``Contents-ARCH.gz``, verified like its other
indexes (its sha256 from the signed ``InRelease``) and kept in the index cache.

    packages_for(names, mirror, suite, arch)   # {"libGL.so.1": "libgl1", ...}

It is big (tens of MB), so callers ask only when something is missing, and it is read in one
streaming pass that keeps only the lines about the names asked for.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..cachedir import default_cache_dir
from ..errors import InvalidInput
from . import debian
from .base import mirror_for, recipe_named_by_label

LIB_DIRS = ("lib/", "usr/lib/", "lib64/", "usr/lib64/")


def parse_contents(stream: BinaryIO, names: Iterable[str]) -> dict[str, str]:
    """From a Contents file (``PATH  SECTION/PACKAGE[,SECTION/PACKAGE...]`` lines), the package
    of each of ``names`` (a file's base name) under a library directory; a name under several
    paths takes the one in the shortest path (``/usr/lib/<triplet>/`` over a private folder)."""
    want = set(names)
    best: dict[str, tuple[int, str, str]] = {}
    for raw in stream:
        line = raw.rstrip(b"\n")
        path_b, sep, locs = line.rpartition(b" ")
        if not sep:
            continue
        path = path_b.rstrip().decode("utf-8", errors="replace")
        base = path.rpartition("/")[2]
        if base not in want or not path.startswith(LIB_DIRS):
            continue
        pkg = locs.decode("utf-8", errors="replace").split(",")[0].rpartition("/")[2]
        cand = (path.count("/"), path, pkg)
        if base not in best or cand < best[base]:
            best[base] = cand
    return {name: pkg for name, (_d, _p, pkg) in sorted(best.items())}


def contents_file(release: debian.Release, arch: str, cache_dir: Path | None = None) -> Path:
    """The verified ``main/Contents-ARCH.gz`` of a release, downloaded once into the cache."""
    rel = f"main/Contents-{arch}.gz"
    if rel not in release.files:
        raise InvalidInput(f"{release.mirror}/dists/{release.suite} lists no {rel}")
    sha, size = release.files[rel]
    path = (cache_dir or default_cache_dir()) / "debian-indexes" / sha
    if not path.is_file():
        base = f"{release.mirror}/dists/{release.suite}"
        url = f"{base}/main/by-hash/SHA256/{sha}" if release.by_hash else f"{base}/{rel}"
        debian._download(url, path, sha, what=rel, size=size)
    return path


def packages_for(
    names: Iterable[str],
    mirror: str,
    suite: str,
    arch: str,
    keyring: str = debian.DEFAULT_KEYRING,
) -> dict[str, str]:
    """The Debian package that ships each of ``names`` for ``arch`` (names none ships are left
    out). Fetches the signed release and the Contents index (once; cached)."""
    names = sorted(set(names))
    if not names:
        return {}
    release = debian.fetch_release(mirror, suite, keyring)
    path = contents_file(release, arch)
    try:
        with gzip.open(path, "rb") as f:
            return parse_contents(f, names)
    except (OSError, EOFError, zlib.error) as e:
        raise InvalidInput(f"{path}: unreadable Contents index ({e})") from None


def mirror_of(recipe_name: str | None) -> str:
    """The mirror the base recipe an image label names (``$OCIFORGE_DEBIAN_MIRROR`` first)."""
    if os.environ.get("OCIFORGE_DEBIAN_MIRROR"):
        return os.environ["OCIFORGE_DEBIAN_MIRROR"]
    recipe = recipe_named_by_label(recipe_name)
    return mirror_for(recipe) if recipe else debian.DEFAULT_MIRROR
