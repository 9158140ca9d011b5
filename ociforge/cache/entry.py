"""One memo entry as a small OCI artifact: a key and the blobs it names.

An entry says "the recipe hashed into KEY made these blobs" (a layer: its descriptor and diff_id;
a base image: its manifest and config and the layers they name; a check that passed: the lines
it printed; a *record*: a small JSON object that names no blob, such as a wheel's ELF facts or
which wheels a bytecode closure read). It is an image manifest of :data:`ARTIFACT_TYPE` whose ``layers`` are the blobs it
names (so a registry refuses the entry until they are there, and keeps them while it stands),
tagged :func:`tag_for` the key, with the key and the payload in its annotations.

An entry is only a pointer: it cannot change what a blob holds (every blob is read by digest and
verified), and :func:`parse` refuses one that was written for another key, by another format, or
that names blobs its payload does not. Anything refused costs a rebuild, nothing more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..oci import mediatypes as mt
from ..oci.digest import of_bytes
from ..oci.image import Image
from ..oci.layer import Layer
from ..oci.manifest import Descriptor, Manifest, canonical_json, parse_manifest_bytes

ARTIFACT_TYPE = "application/vnd.ociforge.memo.v1+json"
EMPTY = Descriptor(mt.OCI_EMPTY, of_bytes(b"{}"), 2)
EMPTY_BYTES = b"{}"
KEY = "org.ociforge.memo.key"
KIND = "org.ociforge.memo.kind"
PAYLOAD = "org.ociforge.memo.entry"
KINDS = ("layer", "image", "check", "record")
TAG_PREFIX = "ociforge-memo-"
LAYER_TYPES = (mt.OCI_LAYER, mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD, mt.DOCKER_LAYER_GZIP)
# a base's manifest and config inline: a few KiB; a record (a wheel's file list): up to MAX_RECORD
MAX_ENTRY = 1 << 20
MAX_RECORD = MAX_ENTRY - (16 << 10)  # the record's JSON; a larger one stays on this machine


class BadEntry(InvalidInput):
    """A cache entry that cannot be used (said in one log line, then the build makes its own)."""


def key_hex(key: str) -> str:
    """The hex of a memo key (``sha256:HEX`` or ``HEX``), refused unless it is 64 hex digits."""
    hexpart = key.split(":", 1)[-1]
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InvalidInput(f"memo key {key[:80]!r} is not a sha256")
    return hexpart


def tag_for(key: str) -> str:
    """The tag an entry for ``key`` has in a cache repository (or layout)."""
    return TAG_PREFIX + key_hex(key)


@dataclass(frozen=True)
class Entry:
    key: str
    kind: str
    payload: dict[str, Any]
    blobs: tuple[Descriptor, ...] = field(default=())

    def manifest(self) -> Manifest:
        return Manifest(
            config=EMPTY,
            layers=self.blobs or (EMPTY,),
            annotations={
                KEY: self.key,
                KIND: self.kind,
                PAYLOAD: canonical_json(self.payload).decode(),
            },
            artifact_type=ARTIFACT_TYPE,
        )

    def to_bytes(self) -> bytes:
        return self.manifest().to_bytes()


# ---------------------------------------------------------------------------------------------
# What entries hold


def layer_entry(key: str, layer: Layer) -> Entry:
    payload = {"descriptor": layer.descriptor.to_json(), "diff_id": layer.diff_id}
    return Entry(key, "layer", payload, (layer.descriptor,))


def entry_layer(entry: Entry) -> Layer:
    try:
        desc = Descriptor.from_json(entry.payload["descriptor"])
        diff_id = entry.payload["diff_id"]
        Descriptor(mt.OCI_LAYER, diff_id, 0)  # a digest, or refused
    except (KeyError, TypeError, InvalidInput) as e:
        raise BadEntry(f"layer entry without a valid descriptor and diff_id ({e})") from None
    if desc.media_type not in LAYER_TYPES:
        raise BadEntry(f"{desc.media_type!r} is not a layer media type")
    _own_blob(desc)
    if (desc.digest, desc.size) != (entry.blobs[0].digest, entry.blobs[0].size):
        raise BadEntry("its descriptor is not the blob it names")
    return Layer(desc, diff_id)


def _own_blob(desc: Descriptor) -> None:
    """A layer an entry names is a blob of the cache: not one to fetch from elsewhere
    (``urls``) or carried inline (``data``)."""
    if desc.urls or desc.data or desc.platform is not None:
        raise BadEntry(f"layer {desc.digest} names urls, data or a platform")


def image_entry(key: str, img: Image) -> Entry:
    payload = {"manifest": img.raw_manifest.decode(), "config": img.raw_config.decode()}
    return Entry(key, "image", payload, (img.config_descriptor, *img.layers))


def entry_image(entry: Entry, source) -> Image:
    """The image an entry names, reading its blobs from ``source`` (only when something opens
    them); its manifest and config come from the entry and must hash to what they claim."""
    try:
        raw = entry.payload["manifest"].encode()
        config = entry.payload["config"].encode()
        parsed = parse_manifest_bytes(raw)
    except (KeyError, AttributeError, InvalidInput) as e:
        raise BadEntry(f"image entry without a valid manifest and config ({e})") from None
    if not isinstance(parsed, Manifest) or of_bytes(config) != parsed.config.digest:
        raise BadEntry("its config does not hash to the digest its manifest names")
    for d in parsed.layers:
        _own_blob(d)
    named = {(d.digest, d.size) for d in (parsed.config, *parsed.layers)}
    if named != {(d.digest, d.size) for d in entry.blobs}:
        raise BadEntry("its manifest names other blobs than the entry does")
    return Image(raw, config, source)


def check_entry(key: str, lines: list[str]) -> Entry:
    return Entry(key, "check", {"lines": list(lines)})


def entry_lines(entry: Entry) -> list[str]:
    lines = entry.payload.get("lines")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise BadEntry("check entry without its lines")
    return lines


def record_entry(key: str, data: dict[str, Any]) -> Entry:
    return Entry(key, "record", {"data": data})


def entry_record(entry: Entry) -> dict[str, Any]:
    """A record's JSON object (its reader checks what it holds: see :meth:`BuildMemo.record`)."""
    data = entry.payload.get("data")
    if not isinstance(data, dict) or entry.blobs:
        raise BadEntry("record entry without its JSON object, or naming blobs")
    return data


# ---------------------------------------------------------------------------------------------
# Reading one


def parse(raw: bytes, key: str) -> Entry:
    """The entry in ``raw`` (an entry manifest), which must be one for ``key``."""
    if len(raw) > MAX_ENTRY:
        raise BadEntry(f"{len(raw)} bytes, more than an entry ever holds")
    try:
        man = parse_manifest_bytes(raw)
    except (InvalidInput, ValueError, RecursionError) as e:
        raise BadEntry(f"not a manifest ({str(e)[:200]})") from None
    if not isinstance(man, Manifest) or man.artifact_type != ARTIFACT_TYPE:
        raise BadEntry(
            f"not an ociforge memo entry (artifactType {getattr(man, 'artifact_type', '')!r})"
        )
    ann = man.annotations
    if ann.get(KEY) != key:
        raise BadEntry(f"written for key {str(ann.get(KEY))[:80]!r}, not {key}")
    kind = ann.get(KIND)
    if kind not in KINDS:
        raise BadEntry(f"unknown kind {str(kind)[:40]!r}")
    try:
        payload = json.loads(ann[PAYLOAD])
    except (KeyError, ValueError, RecursionError):
        raise BadEntry("its payload is not JSON") from None
    if not isinstance(payload, dict):
        raise BadEntry("its payload is not a JSON object")
    blobs = tuple(d for d in man.layers if d != EMPTY)
    entry = Entry(key, kind, payload, blobs)
    if kind == "layer" and len(blobs) != 1:
        raise BadEntry(f"a layer entry names {len(blobs)} blobs")
    return entry
