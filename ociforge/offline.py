"""Offline builds: everything from locks and local caches, or one list of what is missing.

An offline build (``build(..., offline=True)``, ``ociforge build --offline``) reads no package
index and no Debian mirror: wheels come from the wheel cache by the lock's sha256s, the default
base from the built-base cache or the ``.deb`` cache by the base lock's sha256s. Registries the
user names (a ``--base`` reference, the destination) are still used: they are the point of a
build in an air-gapped network.

Everything is checked before any work, so a build that cannot finish fails at once, writes
nothing, and says exactly what to fetch, with the command that fetches it on a connected machine
(``ociforge fetch``, which fills the same caches; copy ``$OCIFORGE_CACHE`` across, or carry the
inputs in a bundle: ``ociforge bundle export`` / ``ociforge bundle rebuild``).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from .blobstore import default_cache_dir
from .errors import NotFound, OciforgeError
from .platform import Platform


class MissingInputs(OciforgeError):
    """What an offline build needs that the local caches do not hold, and how to fetch it."""

    def __init__(self, items: Sequence[str], command: str) -> None:
        self.items = list(dict.fromkeys(items))
        self.command = command
        cache = default_cache_dir()
        lines = "\n".join(f"  - {item}" for item in self.items)
        super().__init__(
            f"offline: {len(self.items)} input(s) missing from the local caches ({cache}):\n"
            f"{lines}\n"
            f"fetch them on a connected machine with:\n"
            f"  OCIFORGE_CACHE={shlex.quote(str(cache))} {command}\n"
            f"then copy that folder here (or carry everything in an `ociforge bundle`)"
        )


def fetch_command(
    platforms: Sequence[Platform],
    lock: str | None,
    python: str | None = None,
    gpu: str | None = None,
    base: str | None = None,
) -> str:
    """The ``ociforge fetch`` line that fills the caches an offline build of these inputs needs."""
    parts = ["ociforge", "fetch", "--platform", ",".join(str(p) for p in platforms)]
    parts += (
        ["--lock", str(lock)] if lock else ["-r", "requirements.txt", "--lock", "ociforge.lock"]
    )
    if python:
        parts += ["--python", python]
    if gpu:
        parts += ["--gpu", gpu]
    if base:
        parts += ["--base", str(base)]
    return " ".join(shlex.quote(p) for p in parts)


def missing_wheels(platforms: Sequence[Platform], lock, gpu: str | None = None) -> list[str]:
    """Lock problems and wheels absent from the wheel cache, for every platform built."""
    from .lock import read_lockfile
    from .wheelcache import WheelCache

    if lock is None:
        return ["a lock file (an offline build installs exactly what a lock names)"]
    try:
        locks = read_lockfile(lock)
    except NotFound:
        return [f"the lock file {lock}"]
    cache = WheelCache()
    out: list[str] = []
    variant = gpu or "cpu"
    for p in platforms:
        found = [lk for t, lk in locks.items() if t.platform == p and t.variant == variant]
        if not found:
            out.append(f"an entry for {p} ({variant}) in the lock {lock}")
        for lk in found:
            for w in lk.packages:
                if not cache.path_for(w).is_file():
                    out.append(f"wheel {w.filename} (sha256 {w.sha256})")
    return out


def missing_base(platforms: Sequence[Platform], base, python: str) -> list[str]:
    """What the base of an offline build lacks: the default base from the built-base or ``.deb``
    cache (built here when the ``.deb`` files are all present), a local layout's file."""
    from . import base as bases

    if base is None:
        try:
            recipe = bases.default_recipe(python)
        except NotFound as e:
            return [str(e)]
        out: list[str] = []
        for p in platforms:
            try:
                bases.build_platform(recipe, p, offline=True)
            except MissingInputs as e:
                out.extend(e.items)
        return out
    if isinstance(base, str):
        from pathlib import Path

        from .transport import parse

        spec = parse(base)
        if spec.kind in ("oci", "oci-archive", "docker-archive") and not Path(spec.path).exists():
            return [f"the base image {base}"]
    return []


def preflight(
    platforms: Sequence[Platform],
    *,
    lock=None,
    base=None,
    python: str,
    gpu: str | None = None,
) -> None:
    """Raise :class:`MissingInputs` listing everything an offline build of these inputs lacks."""
    items = missing_wheels(platforms, lock, gpu) + missing_base(platforms, base, python)
    if items:
        base_arg = base if isinstance(base, str) else None
        raise MissingInputs(
            items, fetch_command(platforms, str(lock) if lock else None, python, gpu, base_arg)
        )


def fetch(
    platforms: Sequence[str | Platform],
    *,
    lock: str,
    requirements=None,
    python: str | None = None,
    gpu: str | None = None,
    base=None,
    update: bool = False,
    **registry_opts,
) -> dict:
    """Fill the caches an offline build needs, on a connected machine: the base (built from its
    ``.deb`` files, or pulled), the lock (resolved with the runtime's own requirements when the
    file does not exist yet, or with ``update``), and every locked wheel of every platform.

    Returns what was done, as JSON-ready data.
    """
    from pathlib import Path

    from .build import _bases, _requirement_list, _targets, runtime_requirements
    from .lock import find_lock, read_lockfile, write_lockfile
    from .platform import parse_platforms
    from .wheelcache import WheelCache
    from .wheelcache import fetch as fetch_wheels

    plats = parse_platforms(list(platforms))
    bases = _bases(base, plats, python, registry_opts)
    targets = _targets(bases, python, None, None, gpu)
    resolved = False
    if update or not Path(lock).is_file():
        from .errors import InvalidInput
        from .resolve import resolve

        if requirements == "auto":
            raise InvalidInput(
                "fetch needs the requirements themselves (a list or a file), not 'auto'"
            )

        reqs = _requirement_list(requirements) + runtime_requirements()
        locks = resolve(reqs, list(targets.values()))
        write_lockfile(lock, locks)
        resolved = True
    else:
        locks = read_lockfile(lock)
    cache = WheelCache()
    per_target = {}
    for p, target in targets.items():
        lk = find_lock(locks, target)
        fetch_wheels(lk, cache)
        per_target[str(p)] = {"target": target.key, "wheels": len(lk.packages)}
    return {
        "lock": str(lock),
        "resolved": resolved,
        "cache": str(default_cache_dir()),
        "platforms": per_target,
        "base": {str(p): img.digest for p, (img, _n) in bases.items()},
        "downloaded": cache.stats.downloaded,
        "downloaded_bytes": cache.stats.downloaded_bytes,
    }
