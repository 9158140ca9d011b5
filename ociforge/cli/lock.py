"""``ociforge lock``: resolve requirements for each target platform and write a lock file.

The lock is what ``build`` installs from, so a build repeats exactly and can run offline. The
target options here (platform, Python, libc, variant) are shared with ``ociforge plan``.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInput
from ..oci.platform import parse_platforms
from ..python.lock import Lock, write_lockfile
from ..python.resolve import IndexSettings, ResolveOptions, resolve, variant_note
from ..python.target import Target
from ._common import human_size


def add_requirement_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("requirements", nargs="*", metavar="REQ", help="requirements, like numpy>=2")
    p.add_argument("-r", "--requirement", dest="requirement_file", help="a requirements file")
    p.add_argument("-c", "--constraint", action="append", default=[], help="a constraints file")
    p.add_argument(
        "--platform",
        default="linux/amd64,linux/arm64",
        help="comma-separated (default: %(default)s)",
    )
    p.add_argument("--python", default="3.11", help="the base's Python version (default: 3.11)")
    p.add_argument("--libc", default="glibc 2.36", help="the base's libc (default: glibc 2.36)")
    p.add_argument(
        "--variant",
        help="cpu or a CUDA version like cu121 (default: cpu, or the CUDA version of the CUDA "
        "builds the requirements resolve to, said on stderr)",
    )
    p.add_argument("--interpreter", help="the base's python path (default: /usr/bin/pythonX.Y)")
    p.add_argument("--index-url", help="replaces pip's index (pip.conf is read otherwise)")
    p.add_argument("--extra-index-url", action="append", default=[])
    p.add_argument("--find-links", "-f", action="append", default=[])
    p.add_argument("--no-index", action="store_true")
    p.add_argument("--no-pip-config", action="store_true", help="ignore pip.conf and PIP_*")
    p.add_argument(
        "--torch-backend", action="store_true", help="use PyTorch's index for the variant (via uv)"
    )


def targets_from_args(args) -> list[Target]:
    return [
        Target.make(p, args.python, args.libc, args.variant or "cpu", interpreter=args.interpreter)
        for p in parse_platforms(args.platform)
    ]


def resolve_from_args(args) -> dict[Target, Lock]:
    """Resolve for the targets the options name, keyed by the lock's own target (the variant
    taken from the resolution when none was named, said in one line on stderr)."""
    locks = resolve(requirements_from_args(args), targets_from_args(args), options_from_args(args))
    for requested, lk in locks.items():
        note = variant_note(requested, lk)
        if note:
            print(note, file=sys.stderr)
    return {lk.target: lk for lk in locks.values()}


def requirements_from_args(args):
    if args.requirement_file and args.requirements:
        raise InvalidInput("give requirements either on the command line or with -r, not both")
    if args.requirement_file:
        return args.requirement_file
    if not args.requirements:
        raise InvalidInput("no requirements: give REQ... or -r FILE")
    return list(args.requirements)


def options_from_args(args) -> ResolveOptions:
    return ResolveOptions(
        index=IndexSettings(
            args.index_url, list(args.extra_index_url), list(args.find_links), args.no_index
        ),
        use_pip_config=not args.no_pip_config,
        constraints=list(args.constraint),
        torch_backend=args.torch_backend,
        infer_variant=args.variant is None,
    )


def register(sub) -> None:
    p = sub.add_parser("lock", help="resolve Python requirements per platform into a lock file")
    add_requirement_options(p)
    p.add_argument("-o", "--output", default="ociforge.lock", help="default: %(default)s")
    p.add_argument(
        "--system-package",
        action="append",
        default=[],
        metavar="PKG",
        help="a Debian package for the image (build's system_packages), resolved against the "
        "default base of --python (repeat or comma-separate); other bases: ociforge fetch --base",
    )
    p.set_defaults(func=run)


def system_locks(args) -> list:
    """``--system-package``: resolved for each platform against the default base of
    ``--python`` (its recipe and lock: no base is built)."""
    from ..bases import syspackages
    from ..bases.base import default_recipe

    names = syspackages.names_of([n for v in args.system_package for n in v.split(",")])
    if not names:
        return []
    recipe = default_recipe(".".join(args.python.split(".")[:2]))
    return [
        syspackages.resolve(names, syspackages.recipe_source(recipe, p), p)
        for p in parse_platforms(args.platform)
    ]


def run(args) -> int:
    from ..bases.syspackages import LOCK_KEY, lock_section

    system = system_locks(args)  # an unknown package fails before anything is resolved
    locks = resolve_from_args(args)
    extra = {LOCK_KEY: lock_section(system)} if system else None
    write_lockfile(args.output, locks, extra)
    for t, lk in locks.items():
        print(f"{t.key}: {len(lk.packages)} wheels, {human_size(lk.total_size)}")
    for s in system:
        print(f"{s.architecture}: {len(s.packages)} Debian {s.suite} packages")
    print(f"wrote {args.output}")
    return 0
