"""A build's registry cache: memo lookups beyond this machine, and what the build leaves there.

Every reusable layer (base, wheel groups, bytecode, runtime, artifacts) is keyed by what it is
made of (wheel sha256s from the lock, the target, settings, compressor versions), and all of it is
known before a single wheel is fetched. So a build looks each key up here first, then in the
cache (:func:`open_cache`): a hit whose blobs the cache holds is used as is; nothing behind it is
downloaded or recompressed, and the destination's push finds the blob there or mounts it. After
the image is written, :meth:`BuildMemo.publish` leaves an entry for every layer the cache lacked.
Records (:mod:`ociforge.cache.records`: small JSON facts such as a wheel's ELF facts or which
wheels a bytecode closure read) go the same way; a record that changed under its key replaces
the cache's.

A lookup that fails (an entry for another key, garbage, a blob the cache lacks) says so in one
log line and counts as a miss; a cache that cannot be reached is said once and then left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DigestMismatch, InvalidInput, OciforgeError
from ..fsutil import atomic_write
from ..oci.blobstore import BlobStore
from ..oci.image import Image, LayeredSource, store_source
from ..oci.layer import Layer
from ..oci.manifest import canonical_json
from ..oci.reference import Reference
from ..transports.spec import parse as parse_spec
from .backends import UNAVAILABLE, LayoutBackend, RegistryBackend
from .entry import (
    MAX_RECORD,
    BadEntry,
    Entry,
    check_entry,
    entry_image,
    entry_layer,
    entry_lines,
    entry_record,
    image_entry,
    key_hex,
    layer_entry,
    parse,
    record_entry,
    tag_for,
)

log = logging.getLogger("ociforge.cache")

# registry options that may go to the cache's registry when it is the destination's
_SAME_REGISTRY_OPTS = ("insecure", "ca_bundle", "auth", "retry")


class BuildMemo:
    """One build's view of a cache (the :class:`~ociforge.oci.layercache.Peer` of its store)."""

    def __init__(self, backend: RegistryBackend | LayoutBackend, store: BlobStore) -> None:
        self.backend = backend
        self.store = store
        self._lock = threading.Lock()
        self._found: dict[str, Entry | None] = {}  # what a lookup answered, per key
        self._hits: set[str] = set()  # keys whose entry this build used
        self._made: dict[str, Entry] = {}  # entries to leave in the cache after the build
        self.down: str | None = None  # why the cache is not used any more, once it failed

    @property
    def where(self) -> str:
        return self.backend.where

    # -- lookups
    def _entry(self, key: str) -> Entry | None:
        with self._lock:
            if key in self._found:
                return self._found[key]
            if self.down:
                return None
        entry = None
        try:
            raw = self.backend.get(key)
            if raw is not None:
                entry = self._check(key, raw)
        except (BadEntry, InvalidInput, DigestMismatch) as e:  # this entry: a miss
            log.warning("ignoring cache entry %s in %s: %s", tag_for(key), self.where, e)
        except (OciforgeError, *UNAVAILABLE) as e:  # the cache: not asked again
            self._give_up(e)
        with self._lock:
            self._found[key] = entry
        return entry

    def _check(self, key: str, raw: bytes) -> Entry:
        entry = parse(raw, key)
        missing = self.backend.missing(entry.blobs)
        if missing:
            raise BadEntry(f"blob {missing[0]} is not in {self.where}")
        return entry

    def _give_up(self, e: BaseException) -> None:
        with self._lock:
            if self.down:
                return
            self.down = str(e) or type(e).__name__
        log.warning("cache %s not used: %s", self.where, self.down)

    def _use(self, key: str, kind: str, read):
        entry = self._entry(key)
        if entry is None:
            return None
        try:
            if entry.kind != kind:
                raise BadEntry(f"a {entry.kind} entry where a {kind} one was looked up")
            value = read(entry)
        except BadEntry as e:
            log.warning("ignoring cache entry %s in %s: %s", tag_for(key), self.where, e)
            with self._lock:
                self._found[key] = None
            return None
        with self._lock:
            self._hits.add(key)
        return value

    def layer(self, key: str) -> Layer | None:
        """The layer the cache holds for ``key``, or None."""
        return self._use(key, "layer", entry_layer)

    def image(self, key: str) -> Image | None:
        """The image (a base) the cache holds for ``key``, its blobs read from the cache."""
        return self._use(key, "image", lambda e: entry_image(e, self.backend.source()))

    def check(self, key: str) -> list[str] | None:
        """The lines a check that passed for ``key`` printed, or None."""
        return self._use(key, "check", entry_lines)

    def record(self, key: str, read: Callable[[dict], Any] = lambda d: d) -> Any:
        """``read(data)`` of the record the cache holds for ``key``, or None. ``read`` checks the
        (hostile) JSON object and raises :class:`BadEntry` for one it cannot use: that is one
        log line and a miss."""
        return self._use(key, "record", lambda e: read(entry_record(e)))

    # -- what this build found or made
    def _note(self, entry: Entry) -> None:
        with self._lock:
            if entry.key not in self._hits:
                self._made[entry.key] = entry

    def note(self, key: str, layer: Layer) -> None:
        self._note(layer_entry(key, layer))

    def note_image(self, key: str, img: Image) -> None:
        self._note(image_entry(key, img))

    def note_check(self, key: str, lines: list[str]) -> None:
        self._note(check_entry(key, lines))

    def note_record(self, key: str, data: dict) -> None:
        """Leave ``data`` under ``key`` in the cache after the build, unless the cache holds it
        already (a record may change under its key: one found with other data is replaced).
        One too large for an entry stays on this machine."""
        entry = record_entry(key, data)
        if len(canonical_json(entry.payload)) > MAX_RECORD:
            return
        with self._lock:
            found = self._found.get(key)
            if found is not None and found.kind == "record" and found.payload == entry.payload:
                return
            self._hits.discard(key)
            self._made[key] = entry

    @property
    def hits(self) -> int:
        return len(self._hits)

    def source(self, store: BlobStore):
        """The blob source of the build's new layers: the local store, then the cache."""
        return LayeredSource(store_source(store), self.backend.source())

    def _marker(self, key: str) -> Path:
        """Where this machine notes that the cache holds ``key``'s entry (so a warm rebuild does
        not ask the cache again for every layer it found here). A record's marker names its
        data too: a record that changed under its key is published again."""
        where = hashlib.sha256(self.where.encode()).hexdigest()[:16]
        name = key_hex(key)
        entry = self._made.get(key)
        if entry is not None and entry.kind == "record":
            name += "-" + hashlib.sha256(canonical_json(entry.payload)).hexdigest()[:16]
        return self.store.root / "cache-entries" / where / name

    def _mark(self, keys) -> None:
        for key in keys:
            with contextlib.suppress(OSError, InvalidInput):
                atomic_write(self._marker(key), b"", mkdir=True)

    def publish(self) -> int:
        """Leave an entry in the cache for every key it lacks (or holds a bad entry for), the
        blobs first (from the local store, else the cache). Returns the number of entries
        written; a failure is one warning (the image is written already)."""
        todo, present = [], []
        for key, entry in sorted(self._made.items()):
            with self._lock:
                looked = key in self._found
            if not looked and self._marker(key).exists():
                continue  # published from here before
            if self.down:
                return 0
            found = None if looked else self._entry(key)
            if found is not None and (found.kind != "record" or found.payload == entry.payload):
                present.append(key)  # a local hit the cache has too
                continue
            todo.append(entry)
        self._mark(present)
        if not todo:
            return 0
        try:
            self.backend.publish(todo, self.source(self.store).open_blob)
        except (OciforgeError, *UNAVAILABLE) as e:
            log.warning("cache %s: entries not published: %s", self.where, e)
            return 0
        self._mark(e.key for e in todo)
        return len(todo)


def _same_registry_opts(registry_opts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in registry_opts.items() if k in _SAME_REGISTRY_OPTS}


def open_cache(
    cache: str | bool | None,
    to: str,
    store: BlobStore,
    *,
    offline: bool = False,
    registry_opts: dict[str, Any] | None = None,
) -> BuildMemo | None:
    """The cache a build uses: ``cache`` (``REGISTRY/REPO``, ``docker://REGISTRY/REPO``,
    ``oci:DIR``), else the destination's repository when ``to`` is a registry; none offline, or
    with ``cache=False`` (``"none"``)."""
    if offline or cache is False or cache == "none":
        return None
    registry_opts = registry_opts or {}
    dest = parse_spec(to)
    dest_ref = Reference.parse(dest.path) if dest.kind == "docker" else None
    if cache is None or cache is True:
        if dest_ref is None:
            return None
        spec = dest
    else:
        spec = parse_spec(str(cache))
    if spec.kind == "oci":
        if spec.tag:
            raise InvalidInput(f"cache {cache!r}: a layout cache is a folder, oci:DIR (no tag)")
        return BuildMemo(LayoutBackend(spec.path, store), store)
    if spec.kind != "docker":
        raise InvalidInput(f"cache {cache!r}: a registry repository (REGISTRY/REPO) or oci:DIR")
    ref = Reference.parse(spec.path)
    if spec is not dest and (":" in spec.path.rsplit("/", 1)[-1] or "@" in spec.path):
        raise InvalidInput(f"cache {cache!r}: name a repository, without a tag or digest")
    repo = Reference(ref.registry, ref.repository)
    same = dest_ref is not None and dest_ref.registry == ref.registry
    opts = (
        _same_registry_opts(registry_opts)
        if same
        else {k: v for k, v in registry_opts.items() if k in ("ca_bundle", "retry")}
    )  # credentials only to the registry they were given for
    mount = dest_ref.repository if same and dest_ref.repository != ref.repository else ""
    return BuildMemo(RegistryBackend(repo, store, opts, mount), store)
