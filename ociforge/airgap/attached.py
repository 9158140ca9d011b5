"""What travels with a bundle's images: their cosign signatures and their referrers (SBOMs).

``export`` copies, for each image it bundles, the ``sha256-<hex>.sig`` tag of the image (and of
each platform image of an index) and the referrers of each platform image (as the referrers tag
schema's ``sha256-<hex>`` index) into the bundle's layout under those same tags, and lists them
in the bundle manifest's ``attached``. ``import`` can refuse the whole bundle, before anything is
pushed, unless every image carries a signature that a given public key verifies
(``require_signature``), and pushes what is attached beside each image it pushes, so
``cosign verify`` and ``ociforge sbom`` work on the closed side as they did on the connected one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, NotFound, SignatureError
from ..oci.image import Image, ImageIndex, from_raw
from ..oci.manifest import Index
from ..supply import cosign, keys, referrers
from ..supply.place import BytesSource, Place, fallback_tag
from ..transports.archive import read_layout_in_tar
from ..transports.layout import write_layout
from ..transports.registry.remote import push

KEY = "attached"
_TAG = re.compile(r"^sha256-[0-9a-f]{64}(\.sig)?$")


def _platform_images(obj: Image | ImageIndex) -> list[Image]:
    return [obj] if isinstance(obj, Image) else [img for _d, img in obj.images()]


def collect(
    layout: Path, image_tag: str, ref: str, obj: Image | ImageIndex, registry_opts: dict
) -> list[dict]:
    """Copy the signatures and referrers of ``obj`` (read where ``ref`` lives) into ``layout``;
    returns the manifest entries. Sources that cannot hold them (archives) give none."""
    try:
        place, _ = Place.of(ref, **registry_opts)
    except InvalidInput:
        return []
    out: list[dict] = []
    for digest in cosign.signed_digests(obj):
        tag = cosign.signature_tag(digest)
        sig = place.read_optional(tag)
        if sig is not None:
            write_layout(sig, layout, tag)
            out.append({"image": image_tag, "kind": "signature", "subject": digest, "tag": tag})
    for img in _platform_images(obj):
        descs = referrers.referrers(place, img.digest)
        if not descs:
            continue
        raw = Index(manifests=tuple(descs)).to_bytes()
        tag = fallback_tag(img.digest)
        write_layout(from_raw(raw, BytesSource({}, place.source())), layout, tag)
        out.append({"image": image_tag, "kind": "referrers", "subject": img.digest, "tag": tag})
    return out


def entries(manifest: dict, where: str) -> list[dict]:
    """The manifest's ``attached`` list, every field checked (outside data)."""
    items = manifest.get(KEY) or []
    if not isinstance(items, list):
        raise InvalidInput(f"{where}: invalid bundle manifest: {KEY} must be a list")
    for n, a in enumerate(items):
        ok = (
            isinstance(a, dict)
            and all(isinstance(a.get(k), str) for k in ("image", "kind", "subject", "tag"))
            and a["kind"] in ("signature", "referrers")
            and _TAG.match(a["tag"])
        )
        if not ok:
            raise InvalidInput(f"{where}: invalid bundle manifest: {KEY}[{n}] is malformed")
    return items


class BundlePlace:
    """A bundle's layout, read-only, as the place signatures are looked up in."""

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.path = str(bundle.path)

    def __str__(self) -> str:
        return f"bundle {self.path}"

    def read(self, tag: str) -> Image | ImageIndex:
        return read_layout_in_tar(self.bundle.src, tag)

    def read_optional(self, tag: str) -> Image | ImageIndex | None:
        try:
            return self.read(tag)
        except NotFound:
            return None


def require_signatures(bundle: Any, images: list, public_key: str | os.PathLike) -> None:
    """Refuse unless every image of ``images`` has a signature ``public_key`` verifies."""
    key = keys.read_public_key(public_key)
    place = BundlePlace(bundle)
    for entry in images:
        try:
            cosign.verify(place, entry.digest, key)
        except SignatureError as e:
            raise SignatureError(
                f"{entry.reference} ({entry.digest}): {e}; the bundle was refused, nothing was "
                "pushed"
            ) from None


def push_attached(bundle: Any, image_tag: str, ref: str, items: list[dict], **opts: Any) -> int:
    """Push what is attached to the image ``image_tag`` into the repository of ``ref``."""
    repo = ref[: ref.rfind(":")] if ref.rfind(":") > ref.rfind("/") else ref  # the tag off
    pushed = 0
    for a in items:
        if a["image"] != image_tag:
            continue
        obj = read_layout_in_tar(bundle.src, a["tag"])
        push(obj, f"{repo}:{a['tag']}", **opts)
        pushed += 1
    return pushed
