"""``ociforge bundle``: carry images and build inputs across an air gap in one file.

``export`` (connected side) writes an OCI archive with the images and, with ``--lock``, what a
rebuild needs; ``verify`` hashes every blob; ``import`` pushes the images into a registry on the
closed side (every blob verified first, tags rewritten with ``--to-registry``/``--prefix``);
``rebuild`` redoes the model image from the bundle alone, offline.

``export`` prints the bundle file's sha256; ``import`` and ``rebuild`` with ``--expect-digest``
refuse any bundle but that one (or one holding the image of that digest), before anything is
pushed or built. ``rebuild`` and ``verify`` unpack (or check) the model's layers within
``--max-members`` members and ``--max-bytes`` bytes.
"""

from __future__ import annotations

import json
import sys

from ..errors import InvalidInput
from ..oci.untar import MAX_BYTES, MAX_MEMBERS
from ..transports.progress import make_progress
from ._common import add_registry_options, registry_kwargs

EXPECT_HELP = (
    "refuse the bundle unless this is its file's sha256 (bundle export prints it) or the "
    "digest of an image in it (then only that image)"
)


def _add_limits(p) -> None:
    p.add_argument(
        "--max-members",
        type=int,
        default=MAX_MEMBERS,
        help=f"most tar members read from the model's layers (default {MAX_MEMBERS})",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=MAX_BYTES,
        help=f"most bytes unpacked from the model's layers (default {MAX_BYTES}, 64 GiB)",
    )


def register(sub) -> None:
    p = sub.add_parser("bundle", help="export/import/rebuild images across an air gap")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)

    e = bsub.add_parser("export", help="write images (and rebuild inputs) into one file")
    e.add_argument("images", nargs="+", metavar="SRC", help="registry references or oci:...")
    e.add_argument("-o", "--output", required=True, help="the bundle file to write")
    e.add_argument("--lock", help="the build's lock: add it, its wheels and the base's .debs")
    e.add_argument("--json", action="store_true", help="print the bundle's manifest")
    add_registry_options(e)
    e.set_defaults(func=run_export)

    i = bsub.add_parser("import", help="push a bundle's images into a registry")
    i.add_argument("bundle", help="the bundle file")
    i.add_argument(
        "--to-registry", required=True, help="registry host[:port] on this side of the gap"
    )
    i.add_argument("--prefix", default="", help="repository prefix, e.g. mirror/ (default none)")
    i.add_argument("--jobs", type=int, default=4, help="blobs uploaded at once (default 4)")
    i.add_argument("--json", action="store_true", help="print pushed references and digests")
    i.add_argument(
        "--require-signature",
        metavar="PUB",
        help="refuse the bundle, pushing nothing, unless every image has a cosign signature "
        "this public key verifies",
    )
    i.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    i.add_argument("--expect-digest", metavar="DIGEST", help=EXPECT_HELP)
    add_registry_options(i)
    i.set_defaults(func=run_import)

    v = bsub.add_parser("verify", help="hash every blob of a bundle and list its contents")
    v.add_argument("bundle")
    v.add_argument("--json", action="store_true")
    _add_limits(v)
    v.set_defaults(func=run_verify)

    r = bsub.add_parser("rebuild", help="rebuild the model image from a bundle alone, offline")
    r.add_argument("bundle")
    r.add_argument("--to", required=True, help="destination (registry reference, oci:...)")
    r.add_argument("--image", help="which image of the bundle (tag or reference)")
    r.add_argument("--json", action="store_true")
    r.add_argument("--expect-digest", metavar="DIGEST", help=EXPECT_HELP)
    _add_limits(r)
    add_registry_options(r)
    r.set_defaults(func=run_rebuild)


def run_export(args) -> int:
    from ..airgap.bundle import (  # the build loads every part (~0.2 s): only for this command
        export,
        file_digest,
    )

    manifest = export(args.output, args.images, lock=args.lock, **registry_kwargs(args))
    digest = file_digest(args.output)
    if args.json:
        print(json.dumps({**manifest, "bundle_digest": digest}, indent=2))
    else:
        for img in manifest["images"]:
            print(f"{img['reference']}@{img['digest']}")
        print(f"wrote {args.output} ({len(manifest['files'])} build inputs)")
        print(f"bundle {digest} (check it on the other side: --expect-digest {digest})")
    return 0


def run_import(args) -> int:
    from ..airgap.bundle import (
        import_,  # the build loads every part (~0.2 s): only for this command
    )

    if args.jobs < 1:
        raise InvalidInput(f"--jobs must be at least 1, not {args.jobs}")
    results = import_(
        args.bundle,
        args.to_registry,
        prefix=args.prefix,
        jobs=args.jobs,
        progress=make_progress(args.quiet or args.json),
        expect_digest=args.expect_digest,
        require_signature=args.require_signature,
        **registry_kwargs(args),
    )
    if args.json:
        print(json.dumps({"images": results}, indent=2))
    elif not args.quiet:
        for r in results:
            print(f"{r['reference']}@{r['digest']}", file=sys.stdout)
    return 0


def run_verify(args) -> int:
    from ..airgap.bundle import Bundle  # the build loads every part (~0.2 s): only for this command

    b = Bundle(args.bundle)
    hashed = b.verify(max_members=args.max_members, max_bytes=args.max_bytes)
    if args.json:
        print(json.dumps({**b.manifest, "verified_bytes": hashed}, indent=2))
    else:
        for img in b.images:
            print(f"{img.reference}@{img.digest} (tag {img.tag})")
        print(f"{len(b.manifest.get('files', []))} build inputs; {hashed} bytes verified")
    return 0


def run_rebuild(args) -> int:
    from ..airgap.bundle import (
        rebuild,  # the build loads every part (~0.2 s): only for this command
    )

    result = rebuild(
        args.bundle,
        args.to,
        image=args.image,
        expect_digest=args.expect_digest,
        max_members=args.max_members,
        max_bytes=args.max_bytes,
        **registry_kwargs(args),
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"{result.reference}@{result.digest}")
    return 0
