"""SBOMs and signatures where an image lives: attach, find, sign, verify by image reference."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import InvalidInput, NotFound
from ..oci.image import Image, ImageIndex
from ..oci.manifest import Descriptor, rfc3339
from ..oci.platform import Platform
from . import cosign, referrers, sbom
from .place import Place

CREATED = "org.opencontainers.image.created"


def attach_sbom(
    place: Place, subject: Descriptor, inp: sbom.SbomInputs, fmt: str = "spdx"
) -> Image:
    """Render the SBOM of ``inp`` and attach it to ``subject`` as a referrer; returns the artifact."""
    data, media_type = sbom.render(inp, fmt)
    art = referrers.artifact(
        subject, media_type, data, media_type, annotations={CREATED: rfc3339(inp.epoch)}
    )
    referrers.attach(place, art)
    return art


@dataclass(frozen=True)
class FoundSbom:
    subject: str  # the platform image's digest
    platform: Platform | None
    format: str
    artifact: str  # the artifact manifest's digest
    data: bytes


def _images(obj: Image | ImageIndex) -> list[tuple[Image, Platform | None]]:
    if isinstance(obj, Image):
        return [(obj, None)]
    return [(img, d.platform or img.platform) for d, img in obj.images()]


def find_sboms(
    place: Place,
    obj: Image | ImageIndex,
    platform: Platform | str | None = None,
    fmt: str | None = None,
) -> list[FoundSbom]:
    """The SBOMs attached to each platform image of ``obj`` (one platform with ``platform``)."""
    want = Platform.parse(platform) if isinstance(platform, str) else platform
    out: list[FoundSbom] = []
    images = _images(obj)
    if want is not None:
        images = [(i, p) for i, p in images if p is None or want.matches(p)]
        if not images:
            raise NotFound(f"{place} has no image for {want}")
    types = [sbom.FORMATS[fmt]] if fmt else list(sbom.FORMATS.values())
    for img, plat in images:
        for desc in referrers.referrers(place, img.digest):
            if desc.artifact_type not in types:
                continue
            _art, data = referrers.read_artifact(place, desc)
            out.append(
                FoundSbom(img.digest, plat, sbom.format_of(desc.artifact_type), desc.digest, data)
            )
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
