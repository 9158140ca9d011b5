"""``ociforge sign --key KEY REF``: a cosign-format signature of an image, with a key pair.

The signature goes where cosign and containers/image look for it: the tag ``sha256-<hex>.sig``
in the image's repository (or OCI layout). An index is signed with each of its images (as the
build does); ``--no-recursive`` signs the index alone. The key's password comes from
``$COSIGN_PASSWORD`` or a prompt. Keyless signing (Fulcio/Rekor) is not supported.
"""

from __future__ import annotations

from ..supply import attach, cosign, keys
from ._common import add_registry_options, registry_kwargs


def register(sub) -> None:
    p = sub.add_parser("sign", help="sign an image with a cosign key (cosign-compatible)")
    p.add_argument("ref", metavar="REF", help="REGISTRY/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]")
    p.add_argument("--key", required=True, metavar="KEY", help="private key file (cosign.key)")
    p.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="sign an index alone, not each of its images too",
    )
    add_registry_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    key = keys.read_private_key(args.key)
    place, obj = attach.open_image(args.ref, **registry_kwargs(args))
    digests = cosign.signed_digests(obj) if args.recursive else [obj.digest]
    for digest in digests:
        tag = cosign.sign(place, digest, key)
        print(f"signed {place}@{digest} ({tag})")
    return 0
