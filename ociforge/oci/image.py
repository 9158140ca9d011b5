"""The one image model every source and destination speaks (after go-containerregistry).

An :class:`Image` is its raw manifest bytes, its raw config bytes and a :class:`BlobSource` that can
open its layers; an :class:`ImageIndex` is raw index bytes and a way to resolve each child. Raw
bytes are kept because digests are of the bytes as stored, not of our re-serialization.

Nothing is fetched eagerly: a registry-backed image opens a layer only when a destination asks for
its bytes, and :func:`append` builds a new image on top of a base without reading the base's
layers at all (only its manifest and config).
"""

from __future__ import annotations

import contextlib
import io
import json
import lzma
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import BinaryIO, Protocol, runtime_checkable

from ..errors import DigestMismatch, InvalidInput, NotFound, OciforgeError
from . import mediatypes as mt
from .digest import of_bytes
from .layer import Layer, decompressor, source_date_epoch
from .manifest import (
    Descriptor,
    History,
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
    loads,
    parse_manifest_bytes,
    rfc3339,
)
from .platform import Platform


@runtime_checkable
class BlobSource(Protocol):
    """Anything that can open a blob by descriptor: a blob store, a layout, an archive, a registry."""

    def open_blob(self, desc: Descriptor) -> BinaryIO: ...


class ManifestSource(BlobSource, Protocol):
    """A source that can also fetch a manifest by descriptor (registries use another endpoint)."""

    def fetch_manifest(self, desc: Descriptor) -> bytes: ...


def _fetch_manifest(source: BlobSource, desc: Descriptor) -> bytes:
    fetch = getattr(source, "fetch_manifest", None)
    if fetch is not None:
        raw = fetch(desc)
    else:
        with source.open_blob(desc) as f:
            raw = f.read(desc.size + 1)
    if of_bytes(raw) != desc.digest:
        raise DigestMismatch(f"manifest {desc.digest}: content hashes to {of_bytes(raw)}")
    return raw


@dataclass(frozen=True, eq=False)
class Image:
    """A single-platform image: raw manifest and config, and where its layer blobs come from."""

    raw_manifest: bytes
    raw_config: bytes
    source: BlobSource

    @cached_property
    def manifest(self) -> Manifest:
        m = parse_manifest_bytes(self.raw_manifest)
        if not isinstance(m, Manifest):
            raise InvalidInput("expected an image manifest, got an index")
        return m

    @cached_property
    def config(self) -> ImageConfig:
        return ImageConfig.from_json(loads(self.raw_config, "image config"))

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    @cached_property
    def digest(self) -> str:
        return of_bytes(self.raw_manifest)

    @property
    def config_descriptor(self) -> Descriptor:
        return self.manifest.config

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers

    @property
    def platform(self) -> Platform:
        return self.config.platform

    def descriptor(self, platform: bool = True, **kw) -> Descriptor:
        return Descriptor(
            self.media_type,
            self.digest,
            len(self.raw_manifest),
            platform=self.platform if platform else None,
            **kw,
        )

    def open_layer(self, desc: Descriptor) -> BinaryIO:
        return self.source.open_blob(desc)

    def blobs(self) -> list[Descriptor]:
        """Config and layers (the blobs a destination must have before the manifest)."""
        return [self.manifest.config, *self.manifest.layers]

    @property
    def size(self) -> int:
        """Stored size: manifest, config and compressed layers."""
        return len(self.raw_manifest) + sum(d.size for d in self.blobs())


@dataclass(frozen=True, eq=False)
class ImageIndex:
    """A multi-platform index; children are resolved lazily through ``source``."""

    raw: bytes
    source: BlobSource
    _children: dict[str, Image | ImageIndex] = field(default_factory=dict, repr=False)

    @cached_property
    def index(self) -> Index:
        idx = parse_manifest_bytes(self.raw)
        if not isinstance(idx, Index):
            raise InvalidInput("expected an index, got an image manifest")
        return idx

    @property
    def media_type(self) -> str:
        return self.index.media_type

    @cached_property
    def digest(self) -> str:
        return of_bytes(self.raw)

    def descriptor(self, **kw) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), **kw)

    def child(self, desc: Descriptor) -> Image | ImageIndex:
        if desc.digest not in self._children:
            self._children[desc.digest] = load(self.source, desc)
        return self._children[desc.digest]

    def children(self) -> Iterator[tuple[Descriptor, Image | ImageIndex]]:
        """Each known child with its descriptor; unknown media types (attestations...) skipped."""
        for desc in self.index.manifests:
            if desc.media_type in mt.ALL_MANIFESTS:
                yield desc, self.child(desc)

    def images(self) -> Iterator[tuple[Descriptor, Image]]:
        """Runnable images (nested indexes flattened; attestation manifests skipped)."""
        for desc, child in self.children():
            if isinstance(child, ImageIndex):
                yield from child.images()
            elif not _is_attestation(desc):
                yield desc, child

    @property
    def platforms(self) -> list[Platform]:
        return [d.platform or img.platform for d, img in self.images()]

    def select(self, platform: Platform | str) -> Image:
        """The first image matching ``platform`` (normalized), as the spec's matching says."""
        want = Platform.parse(platform)
        for desc, img in self.images():
            have = desc.platform or img.platform
            if want.matches(have):
                return img
        have = ", ".join(str(p) for p in self.platforms) or "none"
        raise NotFound(f"no image for platform {want} in index {self.digest} (has: {have})")


def _is_attestation(desc: Descriptor) -> bool:
    return desc.annotations.get("vnd.docker.reference.type") == "attestation-manifest" or (
        desc.platform is not None and desc.platform.os == "unknown"
    )


def load(source: BlobSource, desc: Descriptor) -> Image | ImageIndex:
    """Load the manifest or index ``desc`` names from ``source`` (config fetched for images)."""
    raw = _fetch_manifest(source, desc)
    return from_raw(raw, source, desc.media_type)


def from_raw(raw: bytes, source: BlobSource, media_type: str = "") -> Image | ImageIndex:
    parsed = parse_manifest_bytes(raw, media_type)
    if isinstance(parsed, Index):
        return ImageIndex(raw, source)
    with source.open_blob(parsed.config) as f:
        config = f.read(parsed.config.size + 1)
    if of_bytes(config) != parsed.config.digest:
        raise InvalidInput(f"config {parsed.config.digest}: content hashes to {of_bytes(config)}")
    return Image(raw, config, source)


# ---------------------------------------------------------------------------------------------
# Building new images: from scratch, and on top of a base.


class LayeredSource:
    """Looks a blob up in several sources in turn: new layers first, then the base's source."""

    def __init__(self, *sources: BlobSource) -> None:
        self.sources = sources

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        for src in self.sources:
            has = getattr(src, "has", None)
            if has is not None and not has(desc.digest):
                continue
            try:
                return src.open_blob(desc)
            except NotFound:
                continue
        raise NotFound(f"blob {desc.digest} is in none of the image's sources")


class _StoreSource:
    """Adapts a :class:`~ociforge.oci.blobstore.BlobStore` (digest-keyed) to the descriptor protocol."""

    def __init__(self, store) -> None:
        self.store = store

    def has(self, digest: str) -> bool:
        return self.store.has(digest)

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return self.store.open_blob(desc.digest)


def store_source(store) -> BlobSource:
    return _StoreSource(store)


@dataclass(frozen=True)
class ConfigChanges:
    """Changes to a base's config; None leaves a field as the base has it."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] | None = None  # merged over the base's Env
    working_dir: str | None = None
    user: str | None = None
    exposed_ports: list[str] | None = None  # added to the base's
    labels: dict[str, str] | None = None  # merged over the base's
    stop_signal: str | None = None


def _merge_env(base: Iterable[str], new: dict[str, str]) -> tuple[str, ...]:
    out: dict[str, str] = {}
    for item in base:
        k, _, v = item.partition("=")
        out[k] = v
    for k, v in new.items():
        if not k or "=" in k:
            raise InvalidInput(f"invalid environment variable name {k!r}")
        out[k] = str(v)
    return tuple(f"{k}={v}" for k, v in out.items())


def _port(p: str) -> str:
    p = str(p)
    return p if "/" in p else f"{p}/tcp"


def empty_config(platform: Platform) -> ImageConfig:
    return ImageConfig(
        architecture=platform.architecture,
        os=platform.os,
        variant=platform.variant,
        os_version=platform.os_version,
    )


def append(
    base: Image | None,
    layers: Iterable[Layer],
    source: BlobSource,
    *,
    platform: Platform | None = None,
    changes: ConfigChanges | None = None,
    history: Iterable[str] | None = None,
    annotations: dict[str, str] | None = None,
    created: int | None = None,
    docker: bool | None = None,
    store=None,
    base_name: str | None = None,
) -> Image:
    """A new image: ``base`` (or scratch) plus ``layers`` (whose blobs ``source`` opens).

    Only the base's manifest and config are used; its layer descriptors are copied by digest and
    its bytes are never read. History and diff_ids are extended; ``created`` defaults to
    ``SOURCE_DATE_EPOCH``. ``base_name`` (the reference the base was read from) is recorded as the
    ``org.opencontainers.image.base.name`` annotation. ``docker`` picks Docker schema 2 media types (gzip layers only);
    by default the base's own kind is kept. When ``store`` is given, the new config is written
    into it, so the image can be served from ``store`` plus the base.
    """
    layers = list(layers)
    if base is None and platform is None:
        raise InvalidInput("an image without a base needs a platform")
    cfg = base.config if base is not None else empty_config(platform)
    if (
        base is not None
        and platform is not None
        and not Platform.parse(platform).matches(cfg.platform)
    ):
        raise InvalidInput(f"base image is {cfg.platform}, not {platform}")
    if docker is None:
        docker = base is not None and base.media_type == mt.DOCKER_MANIFEST
    created_s = rfc3339(source_date_epoch() if created is None else created)
    run = cfg.config
    ch = changes or ConfigChanges()
    if ch.env:
        run = replace(run, env=_merge_env(run.env, ch.env))
    if ch.entrypoint is not None:
        # As docker does: a new entrypoint resets the base's Cmd unless a Cmd is given too.
        run = replace(run, entrypoint=tuple(ch.entrypoint), cmd=None)
    if ch.cmd is not None:
        run = replace(run, cmd=tuple(ch.cmd))
    if ch.working_dir is not None:
        run = replace(run, working_dir=ch.working_dir)
    if ch.user is not None:
        run = replace(run, user=ch.user)
    if ch.exposed_ports:
        run = replace(
            run,
            exposed_ports=tuple(
                sorted(set(run.exposed_ports) | {_port(p) for p in ch.exposed_ports})
            ),
        )
    if ch.labels:
        run = replace(run, labels={**run.labels, **ch.labels})
    if ch.stop_signal is not None:
        run = replace(run, stop_signal=ch.stop_signal)
    comments = list(history or [])
    new_history = [
        History(
            created=created_s,
            created_by=comments[i] if i < len(comments) else "ociforge",
            comment="ociforge",
        )
        for i in range(len(layers))
    ]
    # Keep history consistent with layers even when the base had none.
    base_history = list(cfg.history)
    if base is not None and not base_history and cfg.diff_ids:
        base_history = [History(created_by="base layer") for _ in cfg.diff_ids]
    new_cfg = replace(
        cfg,
        created=created_s,
        config=run,
        diff_ids=cfg.diff_ids + tuple(layer.diff_id for layer in layers),
        history=tuple(base_history + new_history),
    )
    raw_config = new_cfg.to_bytes()
    config_type = mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG
    config_desc = Descriptor(config_type, of_bytes(raw_config), len(raw_config))
    layer_descs = []
    for layer in layers:
        d = layer.descriptor
        if docker:
            if mt.layer_compression(d.media_type) != "gzip":
                raise InvalidInput(
                    "Docker schema 2 images need gzip layers; use OCI media types for zstd"
                )
            d = d.with_(media_type=mt.DOCKER_LAYER_GZIP)
        elif d.media_type == mt.DOCKER_LAYER_GZIP:
            d = d.with_(media_type=mt.OCI_LAYER_GZIP)
        layer_descs.append(d)
    base_layers = tuple(base.layers) if base is not None else ()
    if not docker:
        base_layers = tuple(_to_oci_layer(d) for d in base_layers)
    else:
        base_layers = tuple(_to_docker_layer(d) for d in base_layers)
    man_annotations = dict(annotations or {})
    if not docker:
        man_annotations.setdefault("org.opencontainers.image.created", created_s)
        if base is not None:
            man_annotations.setdefault("org.opencontainers.image.base.digest", base.digest)
            if base_name:
                man_annotations.setdefault("org.opencontainers.image.base.name", base_name)
    manifest = Manifest(
        config=config_desc,
        layers=base_layers + tuple(layer_descs),
        media_type=mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
        annotations={} if docker else man_annotations,
    )
    if store is not None:
        store.put_bytes(raw_config)
        cfg_source: BlobSource = store_source(store)
    else:
        cfg_source = _BytesSource({config_desc.digest: raw_config})
    sources = [cfg_source, source] + ([base.source] if base is not None else [])
    return Image(manifest.to_bytes(), raw_config, LayeredSource(*sources))


def _to_oci_layer(d: Descriptor) -> Descriptor:
    mapping = {mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP}
    return d.with_(media_type=mapping.get(d.media_type, d.media_type))


def _to_docker_layer(d: Descriptor) -> Descriptor:
    if mt.layer_compression(d.media_type) != "gzip":
        raise InvalidInput(f"layer {d.digest} is {d.media_type}: Docker schema 2 needs gzip layers")
    return d.with_(media_type=mt.DOCKER_LAYER_GZIP)


class _BytesSource:
    """Small in-memory blobs (configs) by digest."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def has(self, digest: str) -> bool:
        return digest in self.blobs

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        try:
            return io.BytesIO(self.blobs[desc.digest])
        except KeyError:
            raise NotFound(f"blob {desc.digest}") from None


def make_index(
    images: Iterable[Image | ImageIndex],
    *,
    annotations: dict[str, str] | None = None,
    docker: bool = False,
) -> ImageIndex:
    """A multi-platform index over ``images`` (their platforms taken from their configs)."""
    images = list(images)
    if not images:
        raise InvalidInput("an index needs at least one image")
    descs, children = [], {}
    seen: set[Platform] = set()
    for img in images:
        if isinstance(img, Image):
            p = img.platform
            if p in seen:
                raise InvalidInput(f"two images for platform {p} in one index")
            seen.add(p)
            descs.append(img.descriptor())
        else:
            descs.append(img.descriptor())
        children[img.digest] = img
    idx = Index(
        manifests=tuple(descs),
        media_type=mt.DOCKER_INDEX if docker else mt.OCI_INDEX,
        annotations={} if docker else dict(annotations or {}),
    )
    raw = idx.to_bytes()
    return ImageIndex(raw, _ChildrenSource(children), dict(children))


class _ChildrenSource:
    """The source of an index built in memory: children are known objects, blobs come from them."""

    def __init__(self, children: dict[str, Image | ImageIndex]) -> None:
        self.children = children

    def fetch_manifest(self, desc: Descriptor) -> bytes:
        child = self.children[desc.digest]
        return child.raw_manifest if isinstance(child, Image) else child.raw

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        for child in self.children.values():
            try:
                return child.source.open_blob(desc)
            except NotFound:
                continue
        raise NotFound(f"blob {desc.digest}")


def image_blobs(
    obj: Image | ImageIndex,
) -> Iterator[tuple[Image, Descriptor, Callable[[], BinaryIO]]]:
    """Every blob (configs and layers) reachable from ``obj``, once each, with the image it was
    found in (where a destination may look for it elsewhere) and an opener for its bytes."""
    seen: set[str] = set()

    def visit(o: Image | ImageIndex):
        if isinstance(o, ImageIndex):
            for _d, child in o.children():
                yield from visit(child)
            return
        for d in o.blobs():
            if d.digest in seen:
                continue
            seen.add(d.digest)
            if d == o.manifest.config:
                yield o, d, (lambda raw=o.raw_config: io.BytesIO(raw))
            else:
                yield o, d, (lambda d=d, o=o: o.open_layer(d))

    yield from visit(obj)


def walk_blobs(obj: Image | ImageIndex) -> Iterator[tuple[Descriptor, Callable[[], BinaryIO]]]:
    """Every blob (configs and layers) reachable from ``obj``, once each, with an opener."""
    for _img, desc, opener in image_blobs(obj):
        yield desc, opener


def walk_manifests(obj: Image | ImageIndex) -> Iterator[tuple[Descriptor, bytes]]:
    """Every manifest and index reachable from ``obj``, children before parents (push order)."""
    seen: set[str] = set()

    def visit(o: Image | ImageIndex, desc: Descriptor):
        if o.digest in seen:
            return
        if isinstance(o, ImageIndex):
            for d, child in o.children():
                yield from visit(child, d)
            seen.add(o.digest)
            yield desc, o.raw
        else:
            seen.add(o.digest)
            yield desc, o.raw_manifest

    top = obj.descriptor() if isinstance(obj, ImageIndex) else obj.descriptor(platform=False)
    yield from visit(obj, top)


def config_json(img: Image) -> bytes:
    return canonical_json(json.loads(img.raw_config))


def open_layer_tar(image: Image, desc: Descriptor) -> tuple[BinaryIO, BinaryIO]:
    """One of ``image``'s layers as an uncompressed tar stream, and the raw stream under it (close
    both)."""
    raw = image.open_layer(desc)
    return decompressor(raw, desc.media_type), raw


def visit_layer_members(
    image: Image,
    visit: Callable[[Descriptor, tarfile.TarFile, tarfile.TarInfo], None],
    what: str = "the image",
) -> None:
    """Call ``visit`` on every member of every layer, lowest layer first, in one streaming pass
    (a member's content can be read with ``tar.extractfile`` inside ``visit``). A layer that
    cannot be read, its members' contents included, is :class:`InvalidInput` naming it."""
    for desc in image.layers:
        stream, raw = open_layer_tar(image, desc)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for ti in tar:
                    visit(desc, tar, ti)
        except OciforgeError:
            raise
        except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, ValueError) as e:
            raise InvalidInput(f"layer {desc.digest} of {what} cannot be read: {e}") from None
        finally:
            with contextlib.suppress(Exception):
                raw.close()
