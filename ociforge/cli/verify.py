"""``ociforge verify --key PUB REF``: check an image's cosign signature against a public key.

Exit status 0 when a signature made with the key covers exactly the digest REF names now;
otherwise an error saying what is wrong (not signed, another key, a signature of another digest:
a tag moved after signing), exit status 2. ``--each`` also checks every image of an index.
"""

from __future__ import annotations

import json

from ..supply import attach, keys
from ._common import add_registry_options, registry_kwargs


def register(sub) -> None:
    p = sub.add_parser("verify", help="verify an image's cosign signature with a public key")
    p.add_argument("ref", metavar="REF", help="REGISTRY/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]")
    p.add_argument("--key", required=True, metavar="PUB", help="public key file (cosign.pub)")
    p.add_argument("--each", action="store_true", help="also every image of an index")
    p.add_argument("--json", action="store_true", help="print the verified payloads as JSON")
    add_registry_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    key = keys.read_public_key(args.key)
    place, obj = attach.open_image(args.ref, **registry_kwargs(args))
    verified = attach.verify_image(place, obj, key, each=args.each)
    if args.json:
        print(json.dumps([v.payload for v in verified], indent=2))
    else:
        for digest in dict.fromkeys(v.digest for v in verified):
            print(f"verified {place}@{digest}: signed with {args.key}")
    return 0
