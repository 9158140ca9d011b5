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

With no lock file, an offline build installs the resolution remembered for the same
requirements and targets (by an online build, ``ociforge fetch`` or ``ociforge lock`` with this
cache), however old: offline, a remembered resolution never expires. The targets come from the
bases, so that is looked up once the bases are read (:func:`remembered_locks`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..bases import base as bases
from ..bases import syspackages
from ..errors import MissingInputs, NotFound
from ..oci.platform import Platform
from ..python.lock import Lock, read_lockfile
from ..python.resolve import recall
from ..python.target import Target
from ..python.wheelcache import WheelCache
from ..transports.spec import parse
from .plan import resolve_options


def fetch_command(
    platforms: Sequence[Platform],
    lock: str | None,
    python: str | None = None,
    gpu: str | None = None,
    base: str | None = None,
    system_packages: Sequence[str] = (),
) -> str:
    """The ``ociforge fetch`` line that fills the caches an offline build of these inputs needs."""
    parts = ["ociforge", "fetch", "--platform", ",".join(str(p) for p in platforms)]
    for name in system_packages:
        parts += ["--system-package", name]
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
        if not found and gpu is None:  # no variant named: the one the lock's resolution took
            found = [lk for t, lk in locks.items() if t.platform == p]
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
    system_packages=None,
) -> None:
    """Raise :class:`MissingInputs` listing everything an offline build of these inputs lacks.

    With no lock and the bases all here, the wheels (and system packages) are checked by
    :func:`remembered_locks` (and :func:`ociforge.bases.syspackages.plan`), once the bases have
    given the targets."""
    base_items = missing_base(platforms, base, python)
    if lock is None and not base_items:
        return
    names = syspackages.names_of(system_packages)
    items = missing_wheels(platforms, lock, gpu) + base_items
    if lock is not None:
        items += syspackages.missing_recorded(platforms, lock, names)
    if items:
        base_arg = base if isinstance(base, str) else None
        raise MissingInputs(
            items,
            fetch_command(platforms, str(lock) if lock else None, python, gpu, base_arg, names),
        )


def remembered_locks(
    requirements: list[str],
    targets: Mapping[Platform, Target],
    *,
    base=None,
    python: str,
    gpu: str | None = None,
) -> dict[Target, Lock]:
    """An offline build with no lock file: the resolution remembered for these requirements and
    each target, whatever its age, with every wheel it names in the cache; or
    :class:`MissingInputs` naming what is missing and the ``ociforge fetch`` command (nothing is
    resolved, downloaded or written)."""
    found = recall(requirements, list(targets.values()), resolve_options(gpu is None))
    cache = WheelCache()
    items: list[str] = []
    for p, target in targets.items():
        lock = found.get(target)
        if lock is None:
            items.append(
                f"a lock file, or a resolution of these requirements for {p} ({target.variant}) "
                f"remembered from an online build with this cache (none is): "
                f"{', '.join(requirements) or '(none)'}"
            )
            continue
        items.extend(
            f"wheel {w.filename} (sha256 {w.sha256})"
            for w in lock.packages
            if not cache.path_for(w).is_file()
        )
    if items:
        base_arg = base if isinstance(base, str) else None
        raise MissingInputs(items, fetch_command(list(targets), None, python, gpu, base_arg))
    return {t: found[t] for t in targets.values()}
