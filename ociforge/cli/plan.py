"""``ociforge plan``: what each platform's image will hold, before any wheel is downloaded.

Resolution reads wheel metadata only, so even a CUDA target (torch and its multi-GB ``nvidia-*``
wheels) is planned in about a second. With ``--lock`` the plan is read from a lock file instead.
"""

from __future__ import annotations

import json

from ..python.install import BIG_WHEEL, plan_layers
from ..python.lock import read_lockfile
from ._common import human_size
from .lock import add_requirement_options, resolve_from_args


def register(sub) -> None:
    p = sub.add_parser("plan", help="list per platform the wheels, versions and sizes to install")
    add_requirement_options(p)
    p.add_argument("--lock", help="plan from this lock file instead of resolving")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    locks = read_lockfile(args.lock) if args.lock else resolve_from_args(args)
    if args.json:
        print(
            json.dumps({t.key: lk.to_json() for t, lk in locks.items()}, indent=2, sort_keys=True)
        )
        return 0
    for t, lk in sorted(locks.items(), key=lambda kv: kv[0].key):
        print(f"{t.key}  ({len(lk.packages)} wheels, {human_size(lk.total_size)})")
        layer_of = {}
        for i, g in enumerate(plan_layers(lk, BIG_WHEEL), 1):
            for w in g.wheels:
                layer_of[w.key] = f"{i} ({g.kind})"
        print(f"  {'package':32} {'version':22} {'size':>10}  layer")
        for w in lk.packages:
            size = human_size(w.size) if w.size is not None else "?"
            print(f"  {w.name:32} {w.version:22} {size:>10}  {layer_of[w.key]}")
        print()
    return 0
