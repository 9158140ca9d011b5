"""OCI 1.1 referrers: artifacts (SBOMs) that point at an image manifest through ``subject``.

An artifact is an image manifest with ``artifactType`` set, the empty config
(``application/vnd.oci.empty.v1+json``, ``{}``), one layer holding the document, and ``subject``
= the image's descriptor. It is pushed by digest. A registry with the referrers API
(``GET /v2/<name>/referrers/<digest>``) lists it by itself; for one without (the reference
``docker-registry``), and in OCI layouts, the client keeps the *referrers tag schema*: the tag
``sha256-<hex>`` holds an index of the subject's referrers, read, extended and written back here
(distribution-spec ``spec.md``, "Referrers Tag Schema").
"""

from __future__ import annotations

from ..errors import NotFound
from ..oci import mediatypes as mt
from ..oci.digest import of_bytes
from ..oci.image import Image, ImageIndex, from_raw
from ..oci.manifest import Descriptor, Index, Manifest
from .place import BytesSource, Place, fallback_tag

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
TITLE = "org.opencontainers.image.title"


def artifact(
    subject: Descriptor,
    artifact_type: str,
    content: bytes,
    content_type: str,
    annotations: dict[str, str] | None = None,
    title: str = "",
) -> Image:
    """An artifact manifest holding ``content``, attached to ``subject`` (deterministic bytes);
    ``title`` names the content's file (``oras pull`` writes it under that name)."""
    empty = Descriptor(EMPTY_MEDIA_TYPE, of_bytes(EMPTY), len(EMPTY))
    layer = Descriptor(
        content_type,
        of_bytes(content),
        len(content),
        annotations={TITLE: title} if title else {},
    )
    subj = Descriptor(subject.media_type, subject.digest, subject.size)
    manifest = Manifest(
        config=empty,
        layers=(layer,),
        media_type=mt.OCI_MANIFEST,
        annotations=dict(annotations or {}),
        subject=subj,
        artifact_type=artifact_type,
    )
    raw = manifest.to_bytes()
    return from_raw(raw, BytesSource({empty.digest: EMPTY, layer.digest: content}))


def attach(place: Place, *arts: Image) -> str:
    """Store ``arts`` (artifacts of one subject) where their subject lives and make them
    findable, the referrers tag written once for all; returns how (``"api"`` or ``"tag"``).
    Attaching the same artifacts twice changes nothing."""
    subjects = {a.manifest.subject.digest if a.manifest.subject else None for a in arts}
    if not arts or None in subjects or len(subjects) != 1:
        raise ValueError("artifacts need one and the same subject")
    (subject,) = subjects
    for art in arts:
        place.write(art, None)
    listed = place.referrers_api(subject)
    if listed is not None and all(
        any(d.digest == a.digest for d in listed.manifests) for a in arts
    ):
        return "api"
    tag = fallback_tag(subject)
    current = place.read_optional(tag)
    entries = list(current.index.manifests) if isinstance(current, ImageIndex) else []
    new = [a for a in arts if not any(d.digest == a.digest for d in entries)]
    if not new:
        return "tag"
    blobs: dict[str, bytes] = {}
    for art in new:
        entries.append(
            Descriptor(
                mt.OCI_MANIFEST,
                art.digest,
                len(art.raw_manifest),
                annotations=dict(art.manifest.annotations),
                artifact_type=art.manifest.artifact_type,
            )
        )
        blobs[art.digest] = art.raw_manifest
        blobs[art.manifest.config.digest] = EMPTY
        for layer in art.layers:
            with art.source.open_blob(layer) as f:
                blobs[layer.digest] = f.read()
    index = Index(manifests=tuple(entries), media_type=mt.OCI_INDEX)
    place.write(from_raw(index.to_bytes(), BytesSource(blobs, place.source())), tag)
    return "tag"


def referrers(place: Place, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
    """The referrers of ``digest``: from the referrers API where the registry has it, else from
    the fallback tag; filtered by ``artifact_type``."""
    listed = place.referrers_api(digest)
    if listed is None:
        current = place.read_optional(fallback_tag(digest))
        listed = current.index if isinstance(current, ImageIndex) else Index(manifests=())
    return [
        d for d in listed.manifests if artifact_type is None or d.artifact_type == artifact_type
    ]


def read_artifact(place: Place, desc: Descriptor) -> tuple[Image, bytes]:
    """The artifact manifest ``desc`` names and the bytes of its (first) layer, verified."""
    art = place.read(desc.digest)
    if not isinstance(art, Image) or not art.layers:
        raise NotFound(f"{place}@{desc.digest} is not an artifact with content")
    layer = art.layers[0]
    with art.source.open_blob(layer) as f:
        data = f.read(layer.size + 1)
    if of_bytes(data) != layer.digest:
        raise NotFound(f"{place}@{desc.digest}: its content does not hash to {layer.digest}")
    return art, data
