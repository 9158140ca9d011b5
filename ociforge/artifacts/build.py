"""Model weights as registry artifacts: KServe modelcars and CNCF ModelPack artifacts.

``weights(paths, to=..., format="modelcar"|"modelpack")`` gathers the files
(:mod:`ociforge.artifacts.files`), makes their layers and writes the result to any transport
(``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``, a registry reference).

*modelcar* (KServe ``oci://`` storage URIs): an image index, one image per platform
(linux/amd64 and linux/arm64 by default), each the shell layer of that architecture
(:mod:`ociforge.artifacts.shell`) under the weights at ``/models/...``. The weights layers are the
same blobs on every platform: a registry stores and a node pulls them once.

*modelpack* (CNCF ModelPack, model-spec v1): an artifact manifest, ``artifactType``
``application/vnd.cncf.model.manifest.v1+json``, its config ``application/vnd.cncf.model.config
.v1+json`` (``descriptor``, ``config``, ``modelfs.diffIds``), one layer per file typed by its
role (``application/vnd.cncf.model.weight.v1.tar`` ...) with the ``org.cncf.model.filepath``
annotation; uncompressed tar by default (``layer_format="raw"``: the file itself as the blob).

Layers: one per large file, small files together; the bytes depend only on the files' paths,
modes and contents (and ``SOURCE_DATE_EPOCH``). Uncompressed layers are never copied before they
are needed (:mod:`ociforge.artifacts.tarplan`): an ``oci:`` layout gets each blob written and
hashed in one pass, a registry gets it streamed from the files, resumably, and not at all when it
already has it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cachedir import default_cache_dir
from ..errors import InvalidInput
from ..oci import mediatypes as mt
from ..oci.blobstore import BlobStore
from ..oci.image import (
    ConfigChanges,
    Image,
    ImageIndex,
    LayeredSource,
    append,
    make_index,
    store_source,
)
from ..oci.layer import Entry, Layer, source_date_epoch, write_layer
from ..oci.layercache import memo_key, memoized
from ..oci.manifest import Descriptor, Manifest, canonical_json, rfc3339
from ..oci.platform import Platform, parse_platforms
from ..oci.reference import parse as parse_reference
from ..transports import spec as transport_spec
from ..transports.layout import layout_store
from ..transports.transport import write_to
from . import files as wfiles
from .shell import PATH_ENV, shell_layer
from .tarplan import PlanSource, TarPlan, file_identity

FORMATS = ("modelcar", "modelpack")
COMPRESSIONS = ("auto", "none", "gzip")
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
MODELS_DIR = "models"
# Small files go together, in layers of at most this many bytes.
GROUP_MAX = 256 << 20

MODEL_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
TITLE = "org.opencontainers.image.title"


def model_layer_type(role: str, layer_format: str = "tar", compression: str = "none") -> str:
    """``application/vnd.cncf.model.<role>.v1.<tar|tar+gzip|raw>``."""
    if role not in wfiles.ROLES:
        raise InvalidInput(f"unknown ModelPack layer role {role!r} ({', '.join(wfiles.ROLES)})")
    if layer_format == "raw":
        return f"application/vnd.cncf.model.{role}.v1.raw"
    suffix = {"none": "tar", "gzip": "tar+gzip"}[compression]
    return f"application/vnd.cncf.model.{role}.v1.{suffix}"


@dataclass
class WeightsResult:
    """What was written: where, its digest, and the layers (the same on every platform)."""

    reference: str
    digest: str
    format: str
    image: Image | ImageIndex
    layers: list[Descriptor]
    platforms: list[str] = field(default_factory=list)
    bytes_uploaded: int | None = None
    details: dict = field(default_factory=dict)

    def summary(self) -> str:
        size = sum(d.size for d in self.layers)
        where = f"{self.reference}@{self.digest}"
        plats = f" for {', '.join(self.platforms)}" if self.platforms else ""
        sent = "" if self.bytes_uploaded is None else f"; {self.bytes_uploaded} bytes sent"
        return f"{self.format} {where}{plats}: {len(self.layers)} weight layers, {size} bytes{sent}"


# ---------------------------------------------------------------------------------------------
# Checks, before anything is read or written


def _destination(to: str, fmt: str) -> transport_spec.Spec:
    if not isinstance(to, str) or not to.strip():
        raise InvalidInput(
            "weights need a destination: to='oci:DIR[:TAG]', 'oci-archive:FILE' or a registry reference"
        )
    s = transport_spec.parse(to)
    if s.kind == "docker":
        parse_reference(s.path)
    elif s.kind not in ("oci", "oci-archive"):
        raise InvalidInput(
            f"{to}: {fmt} artifacts go to a registry, oci:DIR[:TAG] or oci-archive:FILE[:TAG], "
            f"not {s.kind}: (Docker archives hold single-platform Docker images)"
        )
    transport_spec.check_writable(s)
    return s


# ---------------------------------------------------------------------------------------------
# Layers


def _entries(group: Sequence[wfiles.WeightFile], prefix: str) -> list[Entry]:
    return [
        Entry(
            f"{prefix}/{f.path}" if prefix else f.path, "file", f.mode, source=f.source, size=f.size
        )
        for f in group
    ]


def _compression(group: Sequence[wfiles.WeightFile], setting: str) -> str:
    """``auto``: gzip when the group's bytes compress (a large file decides on its own start,
    small files together on theirs), else none."""
    if setting != "auto":
        return setting
    compresses = wfiles.group_compresses((f.source, f.size) for f in group)
    return "gzip" if compresses else "none"


class _Layers:
    """Makes the layers: compressed ones into the cache ``store`` (remembered by the files'
    identity, so unchanged files are not compressed again), uncompressed ones as plans, written
    straight into ``layout`` when the destination is an ``oci:`` layout (one pass, no copy)."""

    def __init__(self, store: BlobStore, epoch: int, layout: BlobStore | None) -> None:
        self.store = store
        self.epoch = epoch
        self.layout = layout
        self.plans = PlanSource()

    def tar(
        self, entries: list[Entry], compression: str, media_type: str = "", annotations=None
    ) -> Layer:
        if compression == "none":
            plan = TarPlan(entries, self.epoch)
            if self.layout is not None:
                plan.write(self.layout)
            layer = plan.layer(media_type or mt.OCI_LAYER, annotations)
            self.plans.add(plan)
            return layer
        key = memo_key(
            "weights-layer",
            compression,
            self.epoch,
            [[e.path, e.mode, file_identity(e.source)] for e in entries],
        )
        layer = memoized(
            self.store, key, lambda: write_layer(entries, self.store, compression, epoch=self.epoch)
        )
        if media_type or annotations:
            layer = Layer(
                layer.descriptor.with_(
                    media_type=media_type or layer.media_type, annotations=dict(annotations or {})
                ),
                layer.diff_id,
            )
        return layer

    def raw(self, f: wfiles.WeightFile, media_type: str, annotations) -> Layer:
        plan = TarPlan.raw(f.source, f.size)
        if self.layout is not None:
            plan.write(self.layout)
        self.plans.add(plan)
        return plan.layer(media_type, annotations)

    def source(self):
        return LayeredSource(self.plans, store_source(self.store))


def _groups(files: list[wfiles.WeightFile]) -> list[list[wfiles.WeightFile]]:
    """Small files together (in path order, split at :data:`GROUP_MAX`), then one per large file."""
    small, large = [f for f in files if not f.large], [[f] for f in files if f.large]
    groups: list[list[wfiles.WeightFile]] = []
    current: list[wfiles.WeightFile] = []
    total = 0
    for f in small:
        if current and total + f.size > GROUP_MAX:
            groups.append(current)
            current, total = [], 0
        current.append(f)
        total += f.size
    if current:
        groups.append(current)
    return groups + large


# ---------------------------------------------------------------------------------------------
# The two formats

_DESCRIPTOR_LISTS = ("authors", "licenses")
_DESCRIPTOR_FIELDS = ("family", "title", "description", "vendor", "docURL", "sourceURL", "revision")
_CONFIG_FIELDS = ("architecture", "paramSize", "precision", "quantization", "format")


def _metadata_fields(metadata: dict) -> tuple[dict, dict]:
    """``metadata`` split into ModelPack ``descriptor`` and ``config`` fields (checked)."""
    descriptor: dict = {}
    config: dict = {}
    for k, v in metadata.items():
        if k in _DESCRIPTOR_LISTS:
            descriptor[k] = [v] if isinstance(v, str) else [str(x) for x in v]
        elif k in _DESCRIPTOR_FIELDS:
            descriptor[k] = str(v)
        elif k in _CONFIG_FIELDS:
            config[k] = str(v)
        else:
            known = ", ".join(_DESCRIPTOR_LISTS + _DESCRIPTOR_FIELDS + _CONFIG_FIELDS)
            raise InvalidInput(f"unknown ModelPack metadata field {k!r} (known: {known})")
    return descriptor, config


def _modelcar(
    files, layers: _Layers, platforms: list[Platform], compression: str, shell_store, **shell_kw
) -> tuple[ImageIndex, list[Layer]]:
    weight_layers = [
        layers.tar(_entries(g, MODELS_DIR), _compression(g, compression)) for g in _groups(files)
    ]
    images = []
    for p in platforms:
        shell, what = shell_layer(p, shell_store, **shell_kw)
        history = [f"ociforge weights: {what}: sh, ln, ls, sleep"] + [
            f"ociforge weights: /{MODELS_DIR}/, layer {i + 1} of {len(weight_layers)}"
            for i in range(len(weight_layers))
        ]
        images.append(
            append(
                None,
                [shell, *weight_layers],
                LayeredSource(layers.source(), store_source(shell_store)),
                platform=p,
                changes=ConfigChanges(env={"PATH": PATH_ENV}, cmd=["sh"]),
                history=history,
                created=layers.epoch,
                store=layers.store,
                annotations={"org.opencontainers.image.description": "KServe modelcar (ociforge)"},
            )
        )
    return make_index(images), weight_layers


def _modelpack(
    files, layers: _Layers, compression: str, layer_format: str, name: str, version: str,
    model_format: str, metadata: dict,
) -> tuple[Image, list[Layer]]:  # fmt: skip
    out: list[Layer] = []
    for f in files:
        meta = {
            "name": f.path,
            "mode": f.mode,
            "uid": 0,
            "gid": 0,
            "size": f.size,
            "mtime": rfc3339(layers.epoch),
            "typeflag": ord("0"),
        }
        ann = {FILEPATH: f.path, FILE_METADATA: json.dumps(meta, sort_keys=True)}
        if layer_format == "raw":
            ann[TITLE] = f.path
            out.append(layers.raw(f, model_layer_type(f.role, "raw"), ann))
        else:
            comp = "none" if compression == "none" else _compression([f], compression)
            out.append(
                layers.tar(_entries([f], ""), comp, model_layer_type(f.role, "tar", comp), ann)
            )
    created = rfc3339(layers.epoch)
    descriptor = {"name": name, "version": version, "createdAt": created}
    config_section: dict = {}
    if model_format:
        config_section["format"] = model_format
    extra_descriptor, extra_config = _metadata_fields(metadata)
    descriptor.update(extra_descriptor)
    config_section.update(extra_config)
    config = {
        "descriptor": descriptor,
        "config": config_section,
        "modelfs": {"type": "layers", "diffIds": [layer.diff_id for layer in out]},
    }
    raw_config = canonical_json(config)
    layers.store.put_bytes(raw_config)
    cfg_desc = Descriptor(
        MODEL_CONFIG, "sha256:" + hashlib.sha256(raw_config).hexdigest(), len(raw_config)
    )
    manifest = Manifest(
        config=cfg_desc,
        layers=tuple(layer.descriptor for layer in out),
        media_type=mt.OCI_MANIFEST,
        artifact_type=MODEL_MANIFEST,
        annotations={
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": version,
        },
    )
    return Image(manifest.to_bytes(), raw_config, layers.source()), out


# ---------------------------------------------------------------------------------------------
# The entry point


def weights(
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    to: str,
    format: str = "modelcar",  # noqa: A002 - the name the CLI and docs use
    platforms: Sequence[str | Platform] | None = None,
    compression: str | None = None,
    layer_format: str = "tar",
    name: str | None = None,
    version: str = "latest",
    model_format: str | None = None,
    metadata: dict | None = None,
    cache: str | os.PathLike | None = None,
    mirror: str | None = None,
    offline: bool = False,
    **registry_opts,
) -> WeightsResult:
    """Write the files under ``paths`` as a ``format`` artifact to ``to``.

    ``compression``: ``auto`` (modelcar default: a file whose start does not compress, such as
    safetensors or GGUF, is stored as it is; others gzip), ``none`` (ModelPack default) or
    ``gzip``. ``platforms``: a modelcar's (default linux/amd64 and linux/arm64). ``name``,
    ``version``, ``model_format`` (inferred from the weight files' names) and ``metadata``
    (ModelPack descriptor/config fields: authors, licenses, description, paramSize, precision...)
    go into a ModelPack config. ``registry_opts`` go to the push (``insecure``, ``auth``,
    ``ca_bundle``, ``jobs``, ``progress``, ``chunk_size``). Raises :class:`~ociforge.errors.
    InvalidInput` (or ``NotFound``) before anything is written when an input is wrong.
    """
    if format not in FORMATS:
        raise InvalidInput(f"unknown weights format {format!r} (one of: {', '.join(FORMATS)})")
    compression = compression or ("auto" if format == "modelcar" else "none")
    if compression not in COMPRESSIONS:
        raise InvalidInput(
            f"unknown compression {compression!r} (one of: {', '.join(COMPRESSIONS)})"
        )
    if layer_format not in ("tar", "raw"):
        raise InvalidInput(f"unknown layer format {layer_format!r} (tar or raw)")
    if layer_format == "raw" and format != "modelpack":
        raise InvalidInput("raw layers (the file itself as the blob) are a ModelPack form only")
    if format == "modelpack" and platforms:
        raise InvalidInput("a ModelPack artifact has no platforms (--platform is for modelcars)")
    if metadata and format != "modelpack":
        raise InvalidInput("metadata goes into a ModelPack config: use format='modelpack'")
    _metadata_fields(dict(metadata or {}))  # checked before anything is written
    dest = _destination(to, format)
    plats = parse_platforms(list(platforms or DEFAULT_PLATFORMS)) if format == "modelcar" else []
    files = wfiles.collect(paths)
    epoch = source_date_epoch()
    if name is None:
        first = paths if isinstance(paths, (str, os.PathLike)) else list(paths)[0]
        name = Path(os.path.abspath(first)).name
    cache_store = BlobStore(cache or default_cache_dir())
    layout = layout_store(Path(dest.path)) if dest.kind == "oci" else None
    layers = _Layers(cache_store, epoch, layout)
    try:
        if format == "modelcar":
            obj, wl = _modelcar(
                files, layers, plats, compression, cache_store, mirror=mirror, offline=offline
            )
        else:
            fmt = model_format if model_format is not None else wfiles.model_format(files)
            obj, wl = _modelpack(
                files, layers, compression, layer_format, name, version, fmt, dict(metadata or {})
            )
        opts = dict(registry_opts) if dest.kind == "docker" else {}
        written = write_to(obj, dest, **opts)
    finally:
        if layout is not None:
            layout.cleanup()
    push = written.details.get("push")
    return WeightsResult(
        reference=written.reference,
        digest=written.digest,
        format=format,
        image=obj,
        layers=[layer.descriptor for layer in wl],
        platforms=[str(p) for p in plats],
        bytes_uploaded=getattr(push, "bytes_uploaded", None),
        details=written.details,
    )
