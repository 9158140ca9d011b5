"""Registry-cache entries travel with a bundle's images (:mod:`ociforge.cache`).

``export`` copies, for each registry image it bundles, the memo entries of that image's
repository whose blobs the bundle holds (the image's layers; a base entry's small config is
fetched, verified, beside them) into the bundle's layout under their own ``ociforge-memo-<key>``
tags, listed in the bundle manifest's ``cache``. Records (a wheel's facts, a bytecode closure:
:mod:`ociforge.cache.records`) name no blob, so every one of the repository travels. ``import`` pushes them into the repository each
image goes to, after the image: a build on the closed side that pushes there (its default cache)
then finds every layer the bundle carries, and downloads and rebuilds none of it.

An entry from a bundle is no more trusted than one from a registry: it is parsed for its own key,
and it only points at blobs by digest (the bundle's blobs are hashed before anything is pushed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..cache.backends import UNAVAILABLE, RegistryBackend
from ..cache.entry import EMPTY_BYTES, BadEntry, parse, tag_for
from ..cache.entry import KEY as ENTRY_KEY
from ..errors import InvalidInput, OciforgeError
from ..oci.blobstore import BlobStore
from ..oci.image import Image
from ..oci.manifest import parse_manifest_bytes
from ..oci.reference import Reference
from ..transports.archive import read_layout_in_tar
from ..transports.layout import LayoutSource, write_layout
from ..transports.spec import parse as parse_spec

log = logging.getLogger("ociforge.cache")

KEY = "cache"
SMALL = 1 << 20  # blobs an entry may bring beyond the image's own (a base's config)


def _backend(ref: Reference, store: BlobStore | None, registry_opts: dict) -> RegistryBackend:
    opts = {
        k: v for k, v in registry_opts.items() if k in ("insecure", "ca_bundle", "auth", "retry")
    }
    return RegistryBackend(Reference(ref.registry, ref.repository), store, opts)


def _entry_of(raw: bytes, tag: str):
    key = parse_manifest_bytes(raw).annotations.get(ENTRY_KEY, "")
    entry = parse(raw, key)
    if tag_for(key) != tag:
        raise BadEntry(f"tagged {tag}, written for key {key}")
    return entry


def collect(layout: Path, image_tag: str, ref: str, registry_opts: dict) -> list[dict]:
    """Copy the entries of ``ref``'s repository whose blobs ``layout`` holds (or small ones it
    fetches) into ``layout``; returns the bundle manifest's ``cache`` items. A source that is
    not a registry, or a cache that cannot be read, gives none (said in one line)."""
    spec = parse_spec(ref)
    if spec.kind != "docker":
        return []
    store = BlobStore(layout)  # a blob fetched for an entry lands in the layout, verified
    backend = _backend(Reference.parse(spec.path), store, registry_opts)
    have = LayoutSource(layout)
    out = []
    try:
        for tag in backend.tags():
            raw = backend.source().get_manifest(tag)[0]
            try:
                entry = _entry_of(raw, tag)
            except InvalidInput as e:
                log.warning("ignoring cache entry %s in %s: %s", tag, backend.where, e)
                continue
            extra = [d for d in entry.blobs if not have.has(d.digest)]
            if any(d.size > SMALL for d in extra):
                continue  # another image's layers: not this bundle's to carry
            for d in extra:
                backend.source().open_blob(d).close()
            write_layout(Image(raw, EMPTY_BYTES, have), layout, tag)
            out.append({"image": image_tag, "tag": tag, "key": entry.key})
    except (OciforgeError, *UNAVAILABLE) as e:
        log.warning("cache entries of %s not bundled: %s", backend.where, e)
    finally:
        store.cleanup()
    return out


def items(manifest: dict) -> list[dict]:
    got = manifest.get(KEY) or []
    if not isinstance(got, list) or not all(
        isinstance(i, dict) and isinstance(i.get("image"), str) and isinstance(i.get("tag"), str)
        for i in got
    ):
        raise InvalidInput(f"bundle manifest: {KEY!r} is not a list of entries")
    return got


def push_entries(bundle: Any, image_tag: str, ref: str, carried: list[dict], **opts: Any) -> int:
    """Publish the entries carried for ``image_tag`` into ``ref``'s repository (whose image was
    just pushed, so their blobs are there); returns how many."""
    entries = []
    for item in carried:
        if item["image"] != image_tag:
            continue
        img = read_layout_in_tar(bundle.src, item["tag"])
        try:
            entries.append(_entry_of(img.raw_manifest, item["tag"]))
        except InvalidInput as e:
            log.warning("ignoring cache entry %s in %s: %s", item["tag"], bundle.path, e)
    if not entries:
        return 0
    r = Reference.parse(ref)
    backend = _backend(r, None, opts)  # publishing reads the bundle, stores nothing
    backend.publish(entries, bundle.src.open_blob)
    return len(entries)
