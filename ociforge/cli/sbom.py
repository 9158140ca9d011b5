"""``ociforge sbom REF``: print the SBOM attached to an image (an OCI referrer of its manifest).

REF is a registry reference or ``oci:DIR[:TAG]``. For an index, ``--platform`` picks the image
(default: the only one, else linux/amd64 when present).

ociforge attaches two documents to each image (see :mod:`ociforge.supply.sbom`): the image's own,
and the contents document it names by sha256. By default they are printed as one complete
document (the packages of the contents document merged into the image document, each checked
by its sha256); ``--part image`` or ``--part contents`` prints one as stored. A single document
(attached by another tool, or by an older ociforge) is printed as stored.
"""

from __future__ import annotations

import json
import sys

from ..errors import InvalidInput, NotFound
from ..oci.image import ImageIndex
from ..oci.platform import Platform
from ..supply import attach, sbom
from ._common import add_registry_options, registry_kwargs

PARTS = ("complete", "image", "contents")


def register(sub) -> None:
    p = sub.add_parser("sbom", help="print the SBOM attached to an image (SPDX or CycloneDX)")
    p.add_argument("ref", metavar="REF", help="REGISTRY/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]")
    p.add_argument("--platform", help="the platform's image of an index (e.g. linux/arm64)")
    p.add_argument("--format", choices=sorted(sbom.FORMATS), help="only this format (default: any)")
    p.add_argument(
        "--part",
        choices=PARTS,
        default="complete",
        help="complete (default: the two documents as one), image or contents (one as stored)",
    )
    p.add_argument(
        "--list", action="store_true", help="list the SBOMs found (JSON) instead of printing one"
    )
    add_registry_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    place, obj = attach.open_image(args.ref, **registry_kwargs(args))
    platform = args.platform
    if platform is None and isinstance(obj, ImageIndex) and not args.list:
        plats = obj.platforms
        if len(plats) > 1:
            amd64 = Platform.parse("linux/amd64")
            if not any(amd64.matches(p) for p in plats):
                raise InvalidInput(
                    f"{args.ref} is an index of {', '.join(map(str, plats))}: pick one with --platform"
                )
            platform = amd64
    found = attach.find_sboms(place, obj, platform, args.format)
    if args.list:
        listing = [
            {
                "subject": f.subject,
                "platform": str(f.platform) if f.platform else None,
                "format": f.format,
                "part": f.part,
                "artifact": f.artifact,
                "size": len(f.data),
            }
            for f in found
        ]
        print(json.dumps(listing, indent=2))
        return 0
    if args.part == "complete":
        found = attach.complete_sboms(found)
    else:
        found = [f for f in found if f.part == args.part]
    if not found:
        raise NotFound(
            f"{args.ref}: no SBOM is attached"
            + (f" for {platform}" if platform else "")
            + ("" if args.part == "complete" else f" as a {args.part} document")
        )
    sys.stdout.buffer.write(found[-1].data)  # the one attached last
    sys.stdout.flush()
    return 0
