"""``ociforge copy SRC DST``: move an image between registries, layouts and archives.

Any pair of transports works (``oci:``, ``oci-archive:``, ``docker-archive:``, ``docker://`` or a
bare reference), keeping every platform of an index like ``skopeo copy --all``, or only one with
``--platform``. Layers flow lazily: a blob the destination registry already has is never read.
"""

from __future__ import annotations

import os
import sys

from ..errors import InvalidInput
from ..transports import spec, transport
from ..transports.progress import make_progress
from ..transports.registry.credentials import Credential
from ._common import add_push_options, registry_kwargs


def register(sub) -> None:
    p = sub.add_parser(
        "copy", help="copy an image or index between registries, layouts and archives"
    )
    p.add_argument(
        "source",
        metavar="SRC",
        help="oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, docker://REF or REF",
    )
    p.add_argument("dest", metavar="DST", help="same forms as SRC")
    p.add_argument("--platform", help="copy only this platform of an index (default: all)")
    p.add_argument("--all", action="store_true", help="copy every platform (the default)")
    p.add_argument(
        "--src-creds", metavar="USER:PASSWORD", help="credentials for the source registry"
    )
    p.add_argument("--dest-creds", metavar="USER:PASSWORD", help="credentials for the destination")
    p.add_argument("--jobs", type=int, default=4, help="blobs uploaded at once (default 4)")
    add_push_options(p)
    p.set_defaults(func=run)


def _creds(text: str | None, flag: str, env: str) -> Credential | None:
    text = text or os.environ.get(env)
    return Credential.parse(text, source=flag if not os.environ.get(env) else env) if text else None


def run(args) -> int:
    if args.platform and args.all:
        raise InvalidInput("--platform and --all contradict each other: pick one")
    if args.jobs < 1:
        raise InvalidInput(f"--jobs must be at least 1, not {args.jobs}")
    src, dst = spec.parse(args.source), spec.parse(args.dest)
    reg = registry_kwargs(args)
    src_opts: dict = {}
    if src.kind == "docker":
        src_opts = dict(reg)
        cred = _creds(args.src_creds, "--src-creds", "OCIFORGE_SRC_CREDS")
        if cred is not None:
            src_opts["auth"] = cred
    obj = transport.open_source(src, platform=args.platform, **src_opts)
    dst_opts: dict = {}
    if dst.kind == "docker":
        dst_opts = dict(reg, jobs=args.jobs, progress=make_progress(args.quiet))
        cred = _creds(args.dest_creds, "--dest-creds", "OCIFORGE_DEST_CREDS")
        if cred is not None:
            dst_opts["auth"] = cred
        if args.chunk_size:
            if args.chunk_size < 1:
                raise InvalidInput("--chunk-size must be at least 1 (MiB)")
            dst_opts["chunk_size"] = args.chunk_size << 20
    result = transport.write_to(obj, dst, platform=args.platform, **dst_opts)
    if not args.quiet:
        print(f"{result.reference}@{result.digest}", file=sys.stdout)
    return 0
