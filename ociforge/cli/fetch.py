"""``ociforge fetch``: fill the local caches so the next build of this project can be offline.

Run it on a connected machine (or a CI job with network) with the project's settings: it builds
or pulls the base, writes the lock when there is none (requirements plus the runtime's own), and
downloads every locked wheel of every platform. ``ociforge build --offline --lock LOCK`` then
touches no package index or mirror; copy ``$OCIFORGE_CACHE`` to carry the caches elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._common import add_registry_options, registry_kwargs
from .build import project_settings


def register(sub) -> None:
    p = sub.add_parser(
        "fetch", help="fill the caches (base, lock, wheels) so the next build can be --offline"
    )
    p.add_argument(
        "--project", default=".", help="folder whose pyproject.toml [tool.ociforge] to read"
    )
    p.add_argument("--platform", action="append", default=[], help="repeat or comma-separate")
    p.add_argument("-r", "--requirements", help="requirements file (used when writing the lock)")
    p.add_argument("--requirement", action="append", default=[], metavar="REQ")
    p.add_argument("--lock", help="the lock to read, or to write when missing (ociforge.lock)")
    p.add_argument("--update", action="store_true", help="resolve again even if the lock exists")
    p.add_argument("--python", help="Python version (default: this interpreter's)")
    p.add_argument("--gpu", help="CUDA variant, e.g. cu121")
    p.add_argument("--base", help="base image (default: ociforge's Debian base)")
    p.add_argument(
        "--system-package",
        action="append",
        default=[],
        metavar="PKG",
        help="a Debian package the build installs (system_packages); repeat or comma-separate",
    )
    p.add_argument("--json", action="store_true", help="print what was fetched as JSON")
    add_registry_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..airgap.fetch import fetch  # the build loads every part (~0.2 s): only for this command

    s = project_settings(Path(args.project).resolve())
    result = fetch(
        args.platform or s.get("platforms") or ["linux/amd64"],
        lock=args.lock or s.get("lock") or "ociforge.lock",
        requirements=args.requirements or (args.requirement or None) or s.get("requirements"),
        python=args.python or s.get("python"),
        gpu=args.gpu or s.get("gpu"),
        base=args.base or s.get("base"),
        update=args.update,
        system_packages=[n for v in args.system_package for n in v.replace(",", " ").split()]
        or s.get("system_packages"),
        **registry_kwargs(args),
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for plat, info in result["platforms"].items():
            debs = f", {info['debs']} system .deb files" if "debs" in info else ""
            print(f"{plat}: {info['wheels']} wheels{debs} cached ({info['target']})")
        print(f"lock: {result['lock']}" + (" (resolved)" if result["resolved"] else ""))
        print(f"cache: {result['cache']} ({result['downloaded']} wheels downloaded)")
    return 0
