"""``ociforge fetch``: fill, on a connected machine, the caches an offline build reads.

The base (built from its ``.deb`` files, or pulled), the lock (resolved with the runtime's own
requirements when the file does not exist yet), and every locked wheel of every platform land in
``$OCIFORGE_CACHE``; copy that folder across, or carry everything in a bundle.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..bases import syspackages
from ..builder.plan import bases_for, requirement_list, runtime_requirements, targets_for
from ..cachedir import default_cache_dir
from ..errors import InvalidInput
from ..oci.platform import Platform, parse_platforms
from ..python.lock import find_lock, read_lockfile, write_lockfile
from ..python.resolve import ResolveOptions, resolve, variant_note
from ..python.wheelcache import WheelCache
from ..python.wheelcache import fetch as fetch_wheels


def fetch(
    platforms: Sequence[str | Platform],
    *,
    lock: str,
    requirements=None,
    python: str | None = None,
    gpu: str | None = None,
    base=None,
    update: bool = False,
    system_packages=None,
    **registry_opts,
) -> dict:
    """Fill the caches an offline build needs, on a connected machine: the base (built from its
    ``.deb`` files, or pulled), the lock (resolved with the runtime's own requirements when the
    file does not exist yet, or with ``update``), and every locked wheel of every platform.

    ``system_packages`` are resolved against each base (unless the lock records them) into
    the lock's ``system-packages`` section, and their ``.deb`` files fetched.

    Returns what was done, as JSON-ready data.
    """
    plats = parse_platforms(list(platforms))
    bases = bases_for(base, plats, python, registry_opts)
    recorded = syspackages.read_locks(lock)
    system = syspackages.plan(system_packages, bases, lock=None if update else lock)
    targets = targets_for(bases, python, None, None, gpu)
    resolved = False
    new_system = [s for s in system.values() if s not in recorded]
    extra = (
        {syspackages.LOCK_KEY: syspackages.lock_section(system.values(), keep=recorded)}
        if system or recorded
        else None
    )
    if update or not Path(lock).is_file():
        if requirements == "auto":
            raise InvalidInput(
                "fetch needs the requirements themselves (a list or a file), not 'auto'"
            )
        reqs = requirement_list(requirements) + runtime_requirements()
        # no gpu named: CUDA builds in the resolution make it that CUDA variant (said on stderr)
        locks = resolve(reqs, list(targets.values()), ResolveOptions(infer_variant=gpu is None))
        for requested, lk in locks.items():
            if note := variant_note(requested, lk):
                print(note, file=sys.stderr)
        write_lockfile(lock, locks, extra)
        resolved = True
    else:
        locks = read_lockfile(lock)
        if new_system:  # the wheels as they were, the system packages added
            write_lockfile(lock, locks, extra)
    cache = WheelCache()
    per_target = {}
    for p, target in targets.items():
        lk = find_lock(locks, target, any_variant=gpu is None)
        fetch_wheels(lk, cache)
        per_target[str(p)] = {"target": lk.target.key, "wheels": len(lk.packages)}
        if p in system:
            per_target[str(p)]["debs"] = len(syspackages.fetch_debs(system[p]))
    return {
        "lock": str(lock),
        "resolved": resolved,
        "cache": str(default_cache_dir()),
        "platforms": per_target,
        "base": {str(p): img.digest for p, (img, _n) in bases.items()},
        "downloaded": cache.stats.downloaded,
        "downloaded_bytes": cache.stats.downloaded_bytes,
    }
