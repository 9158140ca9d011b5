"""OCI image layouts (``oci:DIR[:TAG]``): read any image or index from one, write any into one.

A layout is a blob store plus ``index.json`` naming its images by ``org.opencontainers.image.ref.name``.
Several tags share one layout and its blobs. Writes are ordered so that an interrupted or failed
write leaves the previous content intact: blobs first (each by atomic rename, verified against
its digest), manifests children-first, and ``index.json`` replaced by atomic rename last.

Several processes may write one layout at once: a writer holds a lock (``flock`` on
``.index.json.lock`` in the layout, removed when released) while it creates the layout
(``oci-layout`` first, so another writer never finds a half-made folder) and while it reads,
merges and replaces ``index.json``, so no writer's tag is lost. Blobs are copied between the
two, unlocked: they are content-addressed and published by atomic rename.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import BinaryIO

from ..errors import InvalidInput, NotFound
from ..fsutil import atomic_write, locked, remove_stale
from ..oci import mediatypes as mt
from ..oci.blobstore import BlobStore
from ..oci.image import Image, ImageIndex, load, walk_blobs, walk_manifests
from ..oci.manifest import Descriptor, Index, canonical_json

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}
LOCK_FILE = ".index.json.lock"
# what atomic_write leaves behind when its writer is killed (``.index.json.k3j_x9a2``)
_STAGING = r"\.(index\.json|oci-layout)\.[A-Za-z0-9_]{8}"
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def validate_tag(tag: str) -> str:
    """A tag as registries accept it: ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``."""
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise InvalidInput(
            f"invalid tag {tag!r}: use letters, digits, '_', '.', '-' (not first), at most 128 characters"
        )
    return tag


class LayoutSource:
    """Blobs of a layout on disk (the :class:`~ociforge.oci.image.BlobSource` of what it holds)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        alg, _, hexpart = digest.partition(":")
        return self.root / "blobs" / alg / hexpart

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        try:
            return open(self.path(desc.digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {desc.digest} is missing from the layout {self.root}") from None


def read_index_json(root: Path) -> Index:
    path = Path(root) / "index.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{root} is not an OCI layout (no index.json)") from None
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
    try:
        return Index.from_json(json.loads(raw))
    except (ValueError, RecursionError, InvalidInput) as e:
        raise InvalidInput(f"{path}: invalid index: {e}") from None


def list_tags(root: str | os.PathLike) -> list[str]:
    return [
        d.annotations[REF_NAME]
        for d in read_index_json(Path(root)).manifests
        if REF_NAME in d.annotations
    ]


def find_descriptor(index: Index, tag: str | None, where: str) -> Descriptor:
    """The entry for ``tag`` in a layout's index (or the only entry when no tag is given)."""
    entries = list(index.manifests)
    if tag is None:
        if len(entries) == 1:
            return entries[0]
        tags = [d.annotations.get(REF_NAME, d.digest) for d in entries]
        if not entries:
            raise NotFound(f"{where} holds no image")
        raise InvalidInput(f"{where} holds several images; name one of: {', '.join(tags)}")
    for d in entries:
        if d.annotations.get(REF_NAME) == tag:
            return d
    have = [d.annotations[REF_NAME] for d in entries if REF_NAME in d.annotations]
    raise NotFound(f"no image tagged {tag!r} in {where} (tags: {', '.join(have) or 'none'})")


def read_layout(root: str | os.PathLike, tag: str | None = None) -> Image | ImageIndex:
    """The image or index tagged ``tag`` in the layout at ``root`` (lazily: blobs open on demand)."""
    root = Path(root)
    if not (root / "oci-layout").is_file():
        raise NotFound(f"{root} is not an OCI layout (no oci-layout file)")
    desc = find_descriptor(read_index_json(root), tag, f"OCI layout {root}")
    return load(LayoutSource(root), desc)


def copy_blobs(obj: Image | ImageIndex, store: BlobStore) -> int:
    """Every blob of ``obj`` into ``store`` (verified, skipped when present); returns bytes copied."""
    copied = 0
    for desc, opener in walk_blobs(obj):
        if store.has(desc.digest):
            continue
        with opener() as src:
            store.put_stream(src, expected=desc.digest)
        copied += desc.size
    for desc, raw in walk_manifests(obj):
        if not store.has(desc.digest):
            store.put_bytes(raw, expected=desc.digest)
    return copied


def layout_store(root: Path, *, durable: bool = True) -> BlobStore:
    """The blob store of the OCI layout at ``root``, which is made a layout first if it is new
    (``oci-layout`` before any blob), so writers can put blobs straight into it. Staging files a
    killed writer left behind are removed on the way."""
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root} exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInput(f"cannot create {root}: {e.strerror or e}") from None
    with locked(root / LOCK_FILE):
        remove_stale(root, _STAGING)  # left by a killed writer (no live writer holds them)
        if not (root / "oci-layout").is_file():
            if _foreign(root):
                raise InvalidInput(f"{root} is a non-empty directory that is not an OCI layout")
            atomic_write(root / "oci-layout", canonical_json(LAYOUT_FILE))
    return BlobStore(root, durable=durable)


def write_layout(
    obj: Image | ImageIndex,
    root: str | os.PathLike,
    tag: str | None = None,
    *,
    annotations: dict[str, str] | None = None,
    durable: bool = True,
) -> Descriptor:
    """Add ``obj`` to the layout at ``root`` (created if needed), tagged ``tag``.

    An existing entry with the same tag is replaced; other tags stay. Returns the descriptor
    written into ``index.json``. ``durable=False`` (a staging layout) skips the blobs' fsync.
    """
    root = Path(root)
    if tag is not None:
        validate_tag(tag)
    store = layout_store(root, durable=durable)
    try:
        copy_blobs(obj, store)
    finally:
        store.cleanup()
    with locked(root / LOCK_FILE):
        return _add_to_index(root, obj, tag, annotations)


def _foreign(root: Path) -> bool:
    """Whether ``root`` holds anything but the lock of a writer about to make it a layout."""
    return any(p.name != LOCK_FILE for p in root.iterdir())


def _add_to_index(
    root: Path, obj: Image | ImageIndex, tag: str | None, annotations: dict[str, str] | None
) -> Descriptor:
    """Read, merge and replace ``index.json`` (the caller holds the layout's lock)."""
    index = read_index_json(root) if (root / "index.json").is_file() else Index(manifests=())
    ann = dict(annotations or {})
    if tag is not None:
        ann[REF_NAME] = tag
    if isinstance(obj, Image):
        desc = obj.descriptor(platform=False, annotations=ann)
    else:
        desc = obj.descriptor(annotations=ann)
    kept = [
        d
        for d in index.manifests
        if not (
            (tag is not None and d.annotations.get(REF_NAME) == tag)
            or (tag is None and REF_NAME not in d.annotations and d.digest == desc.digest)
        )
    ]
    new_index = Index(
        manifests=tuple(kept) + (desc,), media_type=mt.OCI_INDEX, annotations=index.annotations
    )
    atomic_write(root / "index.json", new_index.to_bytes())
    return desc
