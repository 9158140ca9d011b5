"""Plain dataclasses for the OCI objects: Descriptor, ImageConfig, Manifest, Index.

Serialization is stable (sorted keys, no spaces, UTF-8), so the same object always gives the same
bytes and the same digest. Objects read from elsewhere keep their original bytes alongside (see
``image.py``): a registry's manifest is addressed by *its* bytes, never by our re-serialization.
Unknown fields are kept in ``extra`` so a base image's config survives a round trip.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidInput
from . import mediatypes as mt
from .digest import of_bytes, validate
from .platform import Platform


def _obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"invalid {what}: not a JSON object")
    return value


def _str(value: Any, what: str) -> str:
    """A string field (absent or null: empty); another type is an error naming the field."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"invalid {what}: a string is expected, not {type(value).__name__}")
    return value


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"invalid {what}: a list of strings is expected")
    return tuple(value)


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidInput(f"invalid {what}: an object of strings is expected")
    return dict(value)


def _size(value: Any, what: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"invalid {what}: size {value!r} is not an integer")
    return value


def canonical_json(obj: Any) -> bytes:
    """The one serialization ociforge writes: sorted keys, compact, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(int(epoch), _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""
    data: str = ""

    def __post_init__(self) -> None:
        validate(self.digest)
        if self.size < 0:
            raise InvalidInput(f"descriptor {self.digest}: negative size {self.size}")

    @classmethod
    def from_json(cls, obj: dict) -> Descriptor:
        obj = _obj(obj, "descriptor")
        what = f"descriptor {str(obj.get('digest'))[:80]!r}"
        try:
            return cls(
                media_type=_str(obj.get("mediaType"), f"{what} mediaType"),
                digest=obj["digest"],
                size=_size(obj["size"], what),
                annotations=_str_map(obj.get("annotations"), f"{what} annotations"),
                platform=Platform.from_json(obj["platform"]) if obj.get("platform") else None,
                urls=_strs(obj.get("urls"), f"{what} urls"),
                artifact_type=_str(obj.get("artifactType"), f"{what} artifactType"),
                data=_str(obj.get("data"), f"{what} data"),
            )
        except KeyError as e:
            raise InvalidInput(f"invalid {what}: no {e.args[0]!r}") from None

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.data:
            out["data"] = self.data
        return out

    def with_(self, **changes) -> Descriptor:
        return replace(self, **changes)


@dataclass(frozen=True)
class History:
    created: str = ""
    created_by: str = ""
    comment: str = ""
    author: str = ""
    empty_layer: bool = False

    @classmethod
    def from_json(cls, obj: dict) -> History:
        obj = _obj(obj, "history entry")
        return cls(
            created=_str(obj.get("created"), "history created"),
            created_by=_str(obj.get("created_by"), "history created_by"),
            comment=_str(obj.get("comment"), "history comment"),
            author=_str(obj.get("author"), "history author"),
            empty_layer=bool(obj.get("empty_layer", False)),
        )

    def to_json(self) -> dict:
        out: dict = {}
        for key in ("created", "created_by", "comment", "author"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.empty_layer:
            out["empty_layer"] = True
        return out


# Field name in the JSON "config" object -> python attribute.
_RUN_FIELDS = {
    "User": "user",
    "ExposedPorts": "exposed_ports",
    "Env": "env",
    "Entrypoint": "entrypoint",
    "Cmd": "cmd",
    "WorkingDir": "working_dir",
    "Volumes": "volumes",
    "Labels": "labels",
    "StopSignal": "stop_signal",
}


@dataclass(frozen=True)
class RunConfig:
    """The execution parameters (the ``config`` object inside an image config)."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    volumes: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict | None) -> RunConfig:
        obj = dict(_obj(obj, "image config's config") if obj is not None else {})
        kw: dict[str, Any] = {}
        for key, attr in _RUN_FIELDS.items():
            if key not in obj:
                continue
            val = obj.pop(key)
            if val is None:
                continue
            what = f"config {key}"
            if key in ("ExposedPorts", "Volumes"):
                val = tuple(sorted(val if isinstance(val, dict) else _strs(val, what)))
            elif key in ("Env",):
                val = _strs(val, what)
            elif key in ("Entrypoint", "Cmd"):
                val = _strs(val, what) if isinstance(val, list) else (_str(val, what),)
            elif key == "Labels":
                val = _str_map(val, what)
            else:
                val = _str(val, what)
            kw[attr] = val
        return cls(**kw, extra=obj)

    def to_json(self) -> dict:
        out: dict = dict(self.extra)
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        return out

    def env_dict(self) -> dict[str, str]:
        out = {}
        for item in self.env:
            k, _, v = item.partition("=")
            out[k] = v
        return out


@dataclass(frozen=True)
class ImageConfig:
    architecture: str
    os: str
    variant: str = ""
    os_version: str = ""
    created: str = ""
    author: str = ""
    config: RunConfig = field(default_factory=RunConfig)
    diff_ids: tuple[str, ...] = ()
    history: tuple[History, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def platform(self) -> Platform:
        return Platform.from_json(
            {"os": self.os, "architecture": self.architecture, "variant": self.variant}
        )

    @classmethod
    def from_json(cls, obj: dict) -> ImageConfig:
        obj = dict(_obj(obj, "image config"))
        try:
            rootfs = _obj(obj.pop("rootfs", None) or {}, "image config rootfs")
            diff_ids = rootfs.get("diff_ids") or []
            history = obj.pop("history", None) or []
            if not isinstance(diff_ids, list) or not isinstance(history, list):
                raise InvalidInput("invalid image config: diff_ids and history must be lists")
            return cls(
                architecture=_str(obj.pop("architecture"), "image config architecture"),
                os=_str(obj.pop("os"), "image config os"),
                variant=_str(obj.pop("variant", ""), "image config variant"),
                os_version=_str(obj.pop("os.version", ""), "image config os.version"),
                created=_str(obj.pop("created", ""), "image config created"),
                author=_str(obj.pop("author", ""), "image config author"),
                config=RunConfig.from_json(obj.pop("config", None)),
                diff_ids=tuple(validate(d) for d in diff_ids),
                history=tuple(History.from_json(h) for h in history),
                extra=obj,
            )
        except KeyError as e:
            raise InvalidInput(f"image config lacks the required field {e.args[0]!r}") from None

    def to_json(self) -> dict:
        out: dict = dict(self.extra)
        out.update(architecture=self.architecture, os=self.os)
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        out["config"] = self.config.to_json()
        out["rootfs"] = {"type": "layers", "diff_ids": list(self.diff_ids)}
        if self.history:
            out["history"] = [h.to_json() for h in self.history]
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = mt.OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict, media_type: str = "") -> Manifest:
        obj = dict(_obj(obj, "manifest"))
        if obj.get("schemaVersion") != 2:
            raise InvalidInput(f"unsupported manifest schemaVersion {obj.get('schemaVersion')!r}")
        obj.pop("schemaVersion")
        layers = obj.pop("layers", None) or []
        if not isinstance(layers, list):
            raise InvalidInput("invalid manifest: layers must be a list")
        try:
            return cls(
                media_type=_str(obj.pop("mediaType", ""), "manifest mediaType")
                or media_type
                or mt.OCI_MANIFEST,
                config=Descriptor.from_json(obj.pop("config")),
                layers=tuple(Descriptor.from_json(d) for d in layers),
                annotations=_str_map(obj.pop("annotations", None), "manifest annotations"),
                subject=Descriptor.from_json(obj.pop("subject")) if obj.get("subject") else None,
                artifact_type=_str(obj.pop("artifactType", ""), "manifest artifactType"),
                extra=obj,
            )
        except KeyError as e:
            raise InvalidInput(f"manifest lacks the required field {e.args[0]!r}") from None

    def to_json(self) -> dict:
        out: dict = dict(self.extra)
        out.update(schemaVersion=2, mediaType=self.media_type, config=self.config.to_json())
        out["layers"] = [d.to_json() for d in self.layers]
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.subject is not None:
            out["subject"] = self.subject.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class Index:
    manifests: tuple[Descriptor, ...]
    media_type: str = mt.OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict, media_type: str = "") -> Index:
        obj = dict(_obj(obj, "index"))
        if obj.pop("schemaVersion", None) != 2:
            raise InvalidInput("unsupported index: schemaVersion must be 2")
        manifests = obj.pop("manifests", None) or []
        if not isinstance(manifests, list):
            raise InvalidInput("invalid index: manifests must be a list")
        return cls(
            media_type=_str(obj.pop("mediaType", ""), "index mediaType")
            or media_type
            or mt.OCI_INDEX,
            manifests=tuple(Descriptor.from_json(d) for d in manifests),
            annotations=_str_map(obj.pop("annotations", None), "index annotations"),
            extra=obj,
        )

    def to_json(self) -> dict:
        out: dict = dict(self.extra)
        out.update(schemaVersion=2, mediaType=self.media_type)
        out["manifests"] = [d.to_json() for d in self.manifests]
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())


def loads(raw: bytes | str, what: str) -> Any:
    """JSON from outside: what cannot be read (not JSON, not UTF-8, nested past Python's
    recursion limit) is an :class:`~ociforge.errors.InvalidInput` naming ``what``."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"{what} is not valid JSON: {str(e)[:200]}") from None


def parse_manifest_bytes(raw: bytes, media_type: str = "") -> Manifest | Index:
    """Parse a manifest or an index; the media type comes from the JSON or the transport."""
    obj = loads(raw, "manifest")
    if not isinstance(obj, dict):
        raise InvalidInput("manifest is not a JSON object")
    kind = _str(obj.get("mediaType"), "manifest mediaType") or media_type
    if not kind:
        kind = mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
    if mt.is_index(kind):
        return Index.from_json(obj, kind)
    if mt.is_manifest(kind):
        return Manifest.from_json(obj, kind)
    raise InvalidInput(f"unsupported manifest media type {kind!r}")


def descriptor_for(raw: bytes, media_type: str, **kw) -> Descriptor:
    return Descriptor(media_type=media_type, digest=of_bytes(raw), size=len(raw), **kw)
