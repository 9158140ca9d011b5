"""cosign-format signatures with a key pair: make them, store them where verifiers look, check them.

What cosign (sigstore/cosign ``specs/SIGNATURE_SPEC.md``) and containers/image expect:

- the signed payload is "simple signing" JSON::

      {"critical": {"identity": {"docker-reference": REPO},
                    "image": {"docker-manifest-digest": DIGEST},
                    "type": "cosign container image signature"},
       "optional": null}

- the signature is base64 of an ASN.1 ECDSA signature over SHA-256 of the payload bytes;
- both are stored in the image's repository under the tag ``sha256-<hex>.sig``: an OCI image
  manifest whose layers are the payloads (``application/vnd.dev.cosign.simplesigning.v1+json``),
  each with its signature in the annotation ``dev.cosignproject.cosign/signature``, and a config
  listing the payloads as diff_ids (as cosign writes it). A second signature of the same image
  adds a layer; signing twice with the same key and payload adds nothing.

:func:`verify` accepts an image when at least one layer's payload names exactly the image's
digest and its signature verifies with the public key; a missing tag, a signature by another key
and a payload for another digest (a tag moved after signing) are refused with
:class:`~ociforge.errors.SignatureError`.

Keyless signing (Fulcio certificates, Rekor entries) is not supported: ociforge neither makes
nor checks transparency-log bundles, like ``cosign verify --insecure-ignore-tlog=true``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import NotFound, SignatureError
from ..oci import mediatypes as mt
from ..oci.digest import of_bytes
from ..oci.image import Image, ImageIndex, from_raw
from ..oci.manifest import Descriptor, Manifest, canonical_json
from . import keys
from .place import BytesSource, Place, fallback_tag

PAYLOAD_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
MAX_PAYLOAD = 1 << 20


def signature_tag(digest: str) -> str:
    """``sha256-<hex>.sig``: where cosign looks for the signatures of ``digest``."""
    return fallback_tag(digest) + ".sig"


def payload(repository: str, digest: str) -> bytes:
    """The simple-signing payload for ``digest`` in ``repository`` (cosign's exact bytes)."""
    return canonical_json(
        {
            "critical": {
                "identity": {"docker-reference": repository},
                "image": {"docker-manifest-digest": digest},
                "type": PAYLOAD_TYPE,
            },
            "optional": None,
        }
    )


def _signature_image(layers: list[tuple[bytes, str]]) -> Image:
    """The ``.sig`` manifest over (payload, signature) pairs, laid out as cosign writes it."""
    descs = [
        Descriptor(PAYLOAD_MEDIA_TYPE, of_bytes(p), len(p), annotations={SIGNATURE_ANNOTATION: sig})
        for p, sig in layers
    ]
    config = canonical_json(
        {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"} for _ in descs],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [d.digest for d in descs]},
        }
    )
    cfg = Descriptor(mt.OCI_CONFIG, of_bytes(config), len(config))
    raw = Manifest(config=cfg, layers=tuple(descs), media_type=mt.OCI_MANIFEST).to_bytes()
    blobs = {cfg.digest: config, **{d.digest: p for d, (p, _s) in zip(descs, layers, strict=True)}}
    return from_raw(raw, BytesSource(blobs))


def _existing(place: Place, digest: str) -> list[tuple[bytes, str]]:
    """The (payload, signature) pairs already stored for ``digest`` (none when no tag)."""
    current = place.read_optional(signature_tag(digest))
    if not isinstance(current, Image):
        return []
    out = []
    for layer in current.layers:
        sig = layer.annotations.get(SIGNATURE_ANNOTATION)
        if layer.media_type != PAYLOAD_MEDIA_TYPE or sig is None or layer.size > MAX_PAYLOAD:
            continue
        out.append((_read_layer(current, layer), sig))
    return out


def _read_layer(img: Image, layer: Descriptor) -> bytes:
    with img.source.open_blob(layer) as f:
        data = f.read(layer.size + 1)
    if of_bytes(data) != layer.digest:
        raise SignatureError(f"signature payload {layer.digest}: content hashes otherwise")
    return data


def sign(
    place: Place,
    digest: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    identity: str | None = None,
) -> str:
    """Sign ``digest`` (an image or index in ``place``) and store the signature; returns the tag.

    ``identity`` is the ``docker-reference`` written into the payload (default: the repository,
    as cosign writes it; for a layout, the layout's path).
    """
    body = payload(identity or place.path, digest)
    sig = keys.sign_bytes(key, body)
    pairs = _existing(place, digest)
    pub = key.public_key()
    if any(p == body and keys.verify_bytes(pub, p, s) for p, s in pairs):
        return signature_tag(digest)  # already signed by this key: nothing to add
    pairs.append((body, sig))
    tag = signature_tag(digest)
    place.write(_signature_image(pairs), tag)
    return tag


@dataclass(frozen=True)
class Verified:
    digest: str
    identity: str  # the docker-reference the payload names
    payload: dict


def verify(place: Place, digest: str, key: ec.EllipticCurvePublicKey) -> list[Verified]:
    """The signatures of ``digest`` in ``place`` that ``key`` made; refuses when there is none."""
    tag = signature_tag(digest)
    try:
        sig_image = place.read(tag)
    except NotFound:
        raise SignatureError(
            f"{place}@{digest} is not signed: no signature tag {tag} in {place}"
        ) from None
    if not isinstance(sig_image, Image):
        raise SignatureError(f"{place}:{tag} is not a cosign signature manifest")
    good: list[Verified] = []
    why: list[str] = []
    for layer in sig_image.layers:
        sig = layer.annotations.get(SIGNATURE_ANNOTATION)
        if layer.media_type != PAYLOAD_MEDIA_TYPE or sig is None:
            continue
        if layer.size > MAX_PAYLOAD:
            why.append(f"payload {layer.digest} is too big")
            continue
        body = _read_layer(sig_image, layer)
        if not keys.verify_bytes(key, body, sig):
            why.append("a signature made with another key (or a damaged one)")
            continue
        try:
            doc = json.loads(body)
            critical = doc["critical"]
            signed = critical["image"]["docker-manifest-digest"]
            kind = critical["type"]
            identity = critical["identity"]["docker-reference"]
        except (ValueError, KeyError, TypeError):
            why.append(f"payload {layer.digest} is not simple-signing JSON")
            continue
        if kind != PAYLOAD_TYPE:
            why.append(f"payload type {kind!r}, not {PAYLOAD_TYPE!r}")
            continue
        if signed != digest:
            why.append(f"a signature of {signed}, not of {digest} (was the tag moved?)")
            continue
        good.append(Verified(digest, str(identity), doc))
    if not good:
        detail = "; ".join(dict.fromkeys(why)) or "no cosign signature layers"
        raise SignatureError(f"{place}@{digest}: no valid signature for this key ({detail})")
    return good


def signed_digests(obj: Image | ImageIndex) -> list[str]:
    """What :func:`sign` covers for ``obj`` by default: the index and each of its images."""
    if isinstance(obj, Image):
        return [obj.digest]
    return [obj.digest, *(d.digest for d, _img in obj.images())]
