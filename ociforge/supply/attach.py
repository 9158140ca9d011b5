"""SBOMs and signatures where an image lives: attach, find, sign, verify by image reference."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import InvalidInput, NotFound
from ..oci.image import Image, ImageIndex
from ..oci.manifest import Descriptor, rfc3339
from ..oci.platform import Platform
from . import cosign, referrers, sbom
from .place import Place

CREATED = "org.opencontainers.image.created"
PART = "org.ociforge.sbom.part"  # "contents" or "image"; absent on a single complete document


def attach_sbom(
    place: Place, subject: Descriptor, inp: sbom.SbomInputs, fmt: str = "spdx"
) -> Image:
    """Render the two SBOM documents of ``inp`` and attach each to ``subject`` as a referrer
    (:mod:`.sbom` says why two); returns the image document's artifact.

    The contents document's artifact has the format's own ``artifactType``
    (``application/spdx+json``, ``application/vnd.cyclonedx+json``), one layer: what a scanner
    that takes an image's SBOM referrer reads (Trivy's ``--sbom-sources oci`` takes only
    single-layer artifacts), with every package in it. The image document's artifact has
    ociforge's own type, so it is never taken for that one."""
    split = sbom.render_split(inp, fmt)
    created = rfc3339(inp.epoch)
    contents = referrers.artifact(
        subject, split.media_type, split.contents, split.media_type,
        annotations={CREATED: created, PART: "contents"}, title=f"sbom-contents.{fmt}.json",
    )  # fmt: skip
    image = referrers.artifact(
        subject, sbom.IMAGE_ARTIFACT_TYPES[fmt], split.image, split.media_type,
        annotations={CREATED: created, PART: "image"}, title=f"sbom-image.{fmt}.json",
    )  # fmt: skip
    referrers.attach(place, contents, image)
    return image


@dataclass(frozen=True)
class FoundSbom:
    subject: str  # the platform image's digest
    platform: Platform | None
    format: str
    artifact: str  # the artifact manifest's digest
    data: bytes
    part: str = "complete"  # "image", "contents", or "complete" (one document, or the two merged)


def _images(obj: Image | ImageIndex) -> list[tuple[Image, Platform | None]]:
    if isinstance(obj, Image):
        return [(obj, None)]
    return [(img, d.platform or img.platform) for d, img in obj.images()]


def _format_of(artifact_type: str) -> str | None:
    for fmt in sbom.FORMATS:
        if artifact_type in (sbom.FORMATS[fmt], sbom.IMAGE_ARTIFACT_TYPES[fmt]):
            return fmt
    return None


def find_sboms(
    place: Place,
    obj: Image | ImageIndex,
    platform: Platform | str | None = None,
    fmt: str | None = None,
) -> list[FoundSbom]:
    """The SBOM documents attached to each platform image of ``obj`` (one platform with
    ``platform``), as stored: each image document, contents document, or single document."""
    want = Platform.parse(platform) if isinstance(platform, str) else platform
    out: list[FoundSbom] = []
    images = _images(obj)
    if want is not None:
        images = [(i, p) for i, p in images if p is None or want.matches(p)]
        if not images:
            raise NotFound(f"{place} has no image for {want}")
    for img, plat in images:
        for desc in referrers.referrers(place, img.digest):
            found_fmt = _format_of(desc.artifact_type)
            if found_fmt is None or (fmt and found_fmt != fmt):
                continue
            _art, data = referrers.read_artifact(place, desc)
            if desc.artifact_type == sbom.IMAGE_ARTIFACT_TYPES[found_fmt]:
                part = "image"
            else:
                part = "contents" if desc.annotations.get(PART) == "contents" else "complete"
            out.append(FoundSbom(img.digest, plat, found_fmt, desc.digest, data, part))
    return out


def complete_sboms(found: list[FoundSbom]) -> list[FoundSbom]:
    """One complete document per image document of ``found`` (merged with the contents document
    it names by sha256, which must be among ``found`` for the same image), and each single
    complete document as it is; in the order found."""
    out: list[FoundSbom] = []
    for f in found:
        if f.part == "complete":
            out.append(f)
        elif f.part == "image":
            want = sbom.contents_sha256(f.data, f.format)
            contents = [
                c
                for c in found
                if c.part == "contents"
                and c.subject == f.subject
                and hashlib.sha256(c.data).hexdigest() == want
            ]
            if not contents:
                raise NotFound(
                    f"the SBOM of {f.subject} names contents sha256:{want}, which is not attached"
                )
            out.append(
                FoundSbom(
                    f.subject, f.platform, f.format, f.artifact,
                    sbom.merge(f.data, contents[0].data, f.format),
                )
            )  # fmt: skip
    return out


def sign_image(
    place: Place,
    obj: Image | ImageIndex,
    key: ec.EllipticCurvePrivateKey,
    *,
    identity: str | None = None,
) -> list[str]:
    """Sign ``obj`` (an index: the index and each of its images); returns the digests signed."""
    digests = cosign.signed_digests(obj)
    for digest in digests:
        cosign.sign(place, digest, key, identity=identity)
    return digests


def verify_image(
    place: Place, obj: Image | ImageIndex, key: ec.EllipticCurvePublicKey, *, each: bool = False
) -> list[cosign.Verified]:
    """Check the signature of ``obj`` (with ``each``, also of every image of an index)."""
    digests = cosign.signed_digests(obj) if each else [obj.digest]
    out: list[cosign.Verified] = []
    for digest in digests:
        out.extend(cosign.verify(place, digest, key))
    return out


def open_image(ref: str, **opts) -> tuple[Place, Image | ImageIndex]:
    """The place of ``ref`` and the image or index it names."""
    place, identifier = Place.of(ref, **opts)
    try:
        return place, place.read(identifier)
    except NotFound as e:
        raise NotFound(f"{ref}: {e}") from None
    except InvalidInput as e:
        raise InvalidInput(f"{ref}: {e}") from None
