"""Where memo entries live: a registry repository, or an OCI layout (for air-gapped sites).

Both answer the same four questions: the raw entry for a key (None when there is none), which of
some blobs are missing, where a hit's blobs are read from (always verified by digest, into the
local blob store), and how to publish entries (blobs first, each entry's tag last).

A registry backend talks to the cache's registry only, with the credential meant for it: the
destination's ``auth`` is passed on only when the cache is on the destination's registry.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import requests

from ..errors import InvalidInput, NotFound
from ..oci.blobstore import BlobStore
from ..oci.digest import of_bytes
from ..oci.image import Image
from ..oci.manifest import Descriptor
from ..oci.reference import Reference
from ..transports import layout as oci_layout
from ..transports.registry import bloblocations
from ..transports.registry.auth import repository_scope
from ..transports.registry.client import Client, RegistryError, RegistryNotFound
from ..transports.registry.remote import MAX_MANIFEST, RegistrySource, resolve_credential
from ..transports.registry.upload import Uploader
from .entry import EMPTY, EMPTY_BYTES, MAX_ENTRY, TAG_PREFIX, Entry, tag_for

# what a cache lookup may meet that means "no cache now", not "no build"
UNAVAILABLE = (RegistryError, requests.RequestException, OSError)


class RegistryBackend:
    """Entries tagged ``ociforge-memo-<key>`` in one repository of a registry."""

    def __init__(
        self, ref: Reference, store: BlobStore | None, opts: dict, mount_from: str = ""
    ) -> None:
        self.ref = ref
        self.store = store
        self.opts = opts  # insecure, ca_bundle, auth, retry: for this registry only
        self.mount_from = mount_from  # the destination repository, when on the same registry
        self._lock = threading.Lock()
        self._source: RegistrySource | None = None

    @property
    def where(self) -> str:
        return f"{self.ref.registry}/{self.ref.repository}"

    def _client(self, actions: str, extra: Iterable[str] = ()) -> Client:
        scopes = [repository_scope(self.ref.repository, actions), *extra]
        return Client(
            self.ref.registry,
            api_host=self.ref.api_host,
            loopback=self.ref.is_loopback,
            insecure=bool(self.opts.get("insecure")),
            ca_bundle=self.opts.get("ca_bundle"),
            credential=resolve_credential(self.opts.get("auth"), self.ref),
            scopes=scopes,
            retry=self.opts.get("retry"),
        )

    def source(self) -> RegistrySource:
        """Where a hit's blobs are read from (downloaded into the store, verified), and whom the
        destination's push asks to mount them from."""
        with self._lock:
            if self._source is None:
                self._source = RegistrySource(self._client("pull"), self.ref, self.store)
            return self._source

    def get(self, key: str) -> bytes | None:
        try:
            raw, _type = self.source().get_manifest(tag_for(key))
        except RegistryNotFound:
            return None
        except RegistryError as e:
            if e.status == 404:
                return None
            raise
        return raw

    def tags(self, limit: int = 100_000) -> list[str]:
        """The repository's entry tags (``ociforge-memo-*``), page by page (a bundle's export
        carries them)."""
        out: list[str] = []
        client = self.source().client
        url = f"/v2/{self.ref.repository}/tags/list?n=1000"
        while url and len(out) < limit:
            resp = client.request("GET", url, what=f"listing the tags of {self.where}")
            try:
                tags = resp.json().get("tags") or []
            except ValueError:
                raise InvalidInput(f"{self.where}: the tag list is not JSON") from None
            finally:
                resp.close()
            out += [t for t in tags if isinstance(t, str) and t.startswith(TAG_PREFIX)]
            nxt = resp.links.get("next", {}).get("url")
            url = client.resolve(resp, nxt) if nxt else ""
        return out

    def missing(self, blobs: Iterable[Descriptor]) -> list[str]:
        client = self.source().client

        def absent(d: Descriptor) -> bool:
            resp = client.request(
                "HEAD",
                f"/v2/{self.ref.repository}/blobs/{d.digest}",
                what=f"checking blob {d.digest}",
                ok=(200, 404),
            )
            resp.close()
            return resp.status_code != 200

        blobs = list(blobs)
        if len(blobs) <= 1:
            return [d.digest for d in blobs if absent(d)]
        with ThreadPoolExecutor(min(4, len(blobs)), thread_name_prefix="ociforge-cache") as pool:
            return [
                d.digest for d, gone in zip(blobs, pool.map(absent, blobs), strict=True) if gone
            ]

    def publish(self, entries: list[Entry], opener: Callable[[Descriptor], BinaryIO]) -> None:
        """Each entry's blobs into the cache repository (mounted from the destination when
        they are there), then the entries, each under its tag."""
        extra = [repository_scope(self.mount_from, "pull")] if self.mount_from else []
        client = self._client("pull,push", extra)
        try:
            up = Uploader(client, self.ref.repository)
            blobs = {d.digest: d for e in entries for d in (EMPTY, *e.blobs)}
            mounts = (self.mount_from,) if self.mount_from else ()
            for d in blobs.values():
                op = (lambda: io.BytesIO(EMPTY_BYTES)) if d == EMPTY else (lambda d=d: opener(d))
                up.push(d, op, mounts)
            for e in entries:
                raw = e.to_bytes()
                resp = client.request(
                    "PUT",
                    f"/v2/{self.ref.repository}/manifests/{tag_for(e.key)}",
                    ok=(200, 201, 204),
                    headers={"Content-Type": e.manifest().media_type},
                    body=raw,
                    what=f"publishing cache entry {tag_for(e.key)}",
                )
                resp.close()
        finally:
            client.close()
        bloblocations.record(self.ref.registry, self.ref.repository, blobs)


class _LayoutBlobs:
    """A layout's blobs, copied into the local store (verified against their digest) when read."""

    def __init__(self, root: Path, store: BlobStore) -> None:
        self.layout = oci_layout.LayoutSource(root)
        self.store = store

    def has(self, digest: str) -> bool:
        return self.store.has(digest) or self.layout.has(digest)

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        if not self.store.has(desc.digest):
            with self.layout.open_blob(desc) as f:
                self.store.put_stream(f, expected=desc.digest)
        return self.store.open_blob(desc.digest)


class LayoutBackend:
    """Entries tagged ``ociforge-memo-<key>`` in an OCI layout, next to the blobs they name."""

    def __init__(self, root: str | Path, store: BlobStore) -> None:
        self.root = Path(root)
        self.store = store
        self._index: dict[str, Descriptor] | None = None
        self._lock = threading.Lock()
        self._blobs = _LayoutBlobs(self.root, store)

    @property
    def where(self) -> str:
        return f"oci:{self.root}"

    def source(self) -> _LayoutBlobs:
        return self._blobs

    def _tags(self) -> dict[str, Descriptor]:
        with self._lock:
            if self._index is None:
                try:
                    index = oci_layout.read_index_json(self.root)
                except NotFound:
                    index = None
                self._index = {
                    d.annotations[oci_layout.REF_NAME]: d
                    for d in (index.manifests if index else ())
                    if oci_layout.REF_NAME in d.annotations
                }
            return self._index

    def get(self, key: str) -> bytes | None:
        desc = self._tags().get(tag_for(key))
        if desc is None:
            return None
        if desc.size > min(MAX_ENTRY, MAX_MANIFEST):
            raise InvalidInput(f"{desc.size} bytes, more than an entry ever holds")
        with self.source().layout.open_blob(desc) as f:
            raw = f.read(desc.size + 1)
        if of_bytes(raw) != desc.digest:
            raise InvalidInput(f"the entry hashes to {of_bytes(raw)}, not {desc.digest}")
        return raw

    def missing(self, blobs: Iterable[Descriptor]) -> list[str]:
        return [d.digest for d in blobs if not self._blobs.has(d.digest)]

    def publish(self, entries: list[Entry], opener: Callable[[Descriptor], BinaryIO]) -> None:
        for e in entries:
            img = Image(e.to_bytes(), EMPTY_BYTES, _Opener(opener))
            oci_layout.write_layout(img, self.root, tag_for(e.key))
        with self._lock:
            self._index = None


class _Opener:
    def __init__(self, opener: Callable[[Descriptor], BinaryIO]) -> None:
        self.opener = opener

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return io.BytesIO(EMPTY_BYTES) if desc == EMPTY else self.opener(desc)


__all__ = ["UNAVAILABLE", "LayoutBackend", "RegistryBackend"]
