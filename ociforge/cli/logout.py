"""``ociforge logout REGISTRY``: forget the credentials ``login`` saved (docker's config or helper)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInput
from ..oci.reference import normalize_registry
from ..transports.registry import credentials


def register(sub) -> None:
    p = sub.add_parser("logout", help="remove saved credentials for a registry")
    p.add_argument("registry", metavar="REGISTRY", help="host[:port], e.g. ghcr.io")
    p.add_argument(
        "--authfile", metavar="FILE", help="the file login wrote to, when not docker's default"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    registry = normalize_registry(args.registry)
    if not registry or "/" in registry:
        raise InvalidInput(f"logout needs a registry host like ghcr.io, not {args.registry!r}")
    path = Path(args.authfile) if args.authfile else None
    if credentials.erase(registry, path):
        print(f"Removed credentials for {registry}")
        return 0
    print(f"Not logged in to {registry}")
    return 1
