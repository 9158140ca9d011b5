"""Where an image lives, for what travels beside it: a registry repository or an OCI layout.

Signatures and SBOMs are stored in the image's own repository (registry) or layout, under tags
derived from the image's digest (``sha256-<hex>`` and ``sha256-<hex>.sig``). :class:`Place`
gives both kinds the few operations that needs: read a tag, write an object under a tag or by
digest only, ask the registry's referrers API, and open what a descriptor names.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..cachedir import default_cache_dir
from ..errors import InvalidInput, NotFound
from ..oci.blobstore import BlobStore
from ..oci.image import Image, ImageIndex, load
from ..oci.manifest import Descriptor, Index
from ..oci.reference import Reference
from ..oci.reference import parse as parse_ref
from ..transports.layout import LayoutSource, copy_blobs, read_layout, write_layout
from ..transports.registry import remote
from ..transports.registry.auth import repository_scope
from ..transports.registry.client import Client
from ..transports.spec import Spec, parse


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest``: ``<alg>-<hex>``."""
    alg, _, hexpart = digest.partition(":")
    return f"{alg}-{hexpart}"


class BytesSource:
    """Small in-memory blobs and manifests, by digest (the objects made here)."""

    def __init__(self, blobs: dict[str, bytes], fallback: Any = None) -> None:
        self.blobs = dict(blobs)
        self.fallback = fallback

    def has(self, digest: str) -> bool:
        return digest in self.blobs or bool(
            self.fallback is not None and getattr(self.fallback, "has", lambda d: True)(digest)
        )

    def fetch_manifest(self, desc: Descriptor) -> bytes:
        if desc.digest in self.blobs:
            return self.blobs[desc.digest]
        if self.fallback is not None:
            fetch = getattr(self.fallback, "fetch_manifest", None)
            if fetch is not None:
                return fetch(desc)
            with self.fallback.open_blob(desc) as f:
                return f.read()
        raise NotFound(f"manifest {desc.digest}")

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        if desc.digest in self.blobs:
            return io.BytesIO(self.blobs[desc.digest])
        if self.fallback is not None:
            return self.fallback.open_blob(desc)
        raise NotFound(f"blob {desc.digest}")


@dataclass
class Place:
    """An image's home: ``kind`` ``"docker"`` (a registry repository) or ``"oci"`` (a layout)."""

    kind: str
    path: str  # the repository's reference (no tag) or the layout folder
    opts: dict = field(default_factory=dict)  # registry options: insecure, ca_bundle, auth...

    @classmethod
    def of(cls, spec: str | Spec, **opts) -> tuple[Place, str | None]:
        """The place of an image reference, and the tag or digest it names (None: the only one)."""
        s = parse(spec) if isinstance(spec, str) else spec
        if s.kind == "oci":
            return cls("oci", s.path), s.tag
        if s.kind == "docker":
            r = parse_ref(s.path)
            return cls("docker", f"{r.registry}/{r.repository}", _registry_opts(opts)), (
                r.digest or r.tag or None
            )
        raise InvalidInput(
            f"{s}: signatures and SBOMs live in a registry or an OCI layout, not in {s.kind}:"
        )

    def __str__(self) -> str:
        return f"oci:{self.path}" if self.kind == "oci" else self.path

    @property
    def ref(self) -> Reference:
        return parse_ref(self.path)

    def spec(self, identifier: str | None) -> str:
        if self.kind == "oci":
            return f"oci:{self.path}" + (f":{identifier}" if identifier else "")
        if identifier is None:
            return self.path
        sep = "@" if identifier.startswith("sha256:") else ":"
        return f"{self.path}{sep}{identifier}"

    # -- reading
    def read(self, identifier: str | None) -> Image | ImageIndex:
        """The image or index under a tag or digest; :class:`NotFound` when there is none."""
        if self.kind == "oci":
            if identifier and identifier.startswith("sha256:"):
                src = LayoutSource(self.path)
                if not src.has(identifier):
                    raise NotFound(f"no manifest {identifier} in the OCI layout {self.path}")
                # sized from the file, so load() reads no more than it and checks the digest
                size = src.path(identifier).stat().st_size
                return load(src, Descriptor("", identifier, size))
            return read_layout(self.path, identifier)
        return remote.pull(self.spec(identifier), **self.opts)

    def read_optional(self, tag: str) -> Image | ImageIndex | None:
        try:
            return self.read(tag)
        except NotFound:
            return None

    def source(self):
        """Blobs of this place, for objects that refer to what it already holds."""
        if self.kind == "oci":
            return LayoutSource(self.path)
        return _LazyRegistrySource(self)

    # -- writing
    def write(self, obj: Image | ImageIndex, tag: str | None) -> None:
        """Store ``obj`` (its blobs first) under ``tag``, or by digest only when ``tag`` is None."""
        if self.kind == "oci":
            if tag is None:
                store = BlobStore(self.path)
                try:
                    copy_blobs(obj, store)
                finally:
                    store.cleanup()
                return
            write_layout(obj, self.path, tag)
            return
        remote.push(obj, self.spec(tag or obj.digest), **self.opts)

    # -- the referrers API (registries that have it)
    def referrers_api(self, digest: str) -> Index | None:
        """The registry's referrers index for ``digest``; None where the API is not there."""
        if self.kind != "docker":
            return None
        r = self.ref
        client = _client(r, self.opts, "pull")
        try:
            resp = client.request(
                "GET",
                f"/v2/{r.repository}/referrers/{digest}",
                ok=(200, 404),
                headers={"Accept": "application/vnd.oci.image.index.v1+json"},
                what=f"listing the referrers of {r.name}@{digest}",
            )
            try:
                if resp.status_code != 200:
                    return None
                kind = resp.headers.get("Content-Type", "").split(";")[0].strip()
                if kind != "application/vnd.oci.image.index.v1+json":
                    return None  # some registries answer any unknown path with HTML or JSON
                return Index.from_json(json.loads(resp.content))
            finally:
                resp.close()
        except (ValueError, InvalidInput):
            return None
        finally:
            client.close()


def _probe(digest: str) -> Descriptor:
    return Descriptor("", digest, 0)


class _LazyRegistrySource:
    """Blobs of a registry repository, pulled through a manifest-less source on demand."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self._src = None

    def _source(self):
        if self._src is None:
            r = self.place.ref
            store = BlobStore(default_cache_dir())
            self._src = remote.RegistrySource(_client(r, self.place.opts, "pull"), r, store)
        return self._src

    def fetch_manifest(self, desc: Descriptor) -> bytes:
        return self._source().fetch_manifest(desc)

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return self._source().open_blob(desc)


_REGISTRY_KEYS = ("insecure", "ca_bundle", "auth", "retry")


def _registry_opts(opts: dict) -> dict:
    return {k: v for k, v in opts.items() if k in _REGISTRY_KEYS and v is not None}


def _client(r: Reference, opts: dict, actions: str) -> Client:
    return Client(
        r.registry,
        api_host=r.api_host,
        loopback=r.is_loopback,
        insecure=bool(opts.get("insecure", False)),
        ca_bundle=opts.get("ca_bundle"),
        credential=remote.resolve_credential(opts.get("auth"), r),
        scopes=[repository_scope(r.repository, actions)],
        retry=opts.get("retry"),
    )
