"""``ociforge inspect SRC``: what an image or index holds, as a table or ``--json``."""

from __future__ import annotations

import json

from ..oci import mediatypes as mt
from ..oci.image import Image, ImageIndex
from ..transports.transport import open_source
from ._common import add_registry_options, human_size, registry_kwargs


def register(sub) -> None:
    p = sub.add_parser(
        "inspect", help="show the manifest, platforms, config and layers of an image"
    )
    p.add_argument(
        "source",
        metavar="SRC",
        help="oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, or a registry reference",
    )
    p.add_argument("--platform", help="only this platform of an index")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--raw", action="store_true", help="print the manifest or index bytes as stored")
    add_registry_options(p)
    p.set_defaults(func=run)


def describe_image(img: Image) -> dict:
    # an artifact (a ModelPack, an SBOM, a signature) has a config of its own kind: no platform,
    # no diff_ids, and its layers say what they are in their annotations
    artifact = img.config_descriptor.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG)
    diff_ids = [] if artifact else list(img.config.diff_ids)
    raw = json.loads(img.raw_config)
    out = {
        "digest": img.digest,
        "mediaType": img.media_type,
        "platform": "" if artifact else str(img.platform),
        "size": img.size,
        "config": {
            "digest": img.config_descriptor.digest,
            "mediaType": img.config_descriptor.media_type,
            **(raw if isinstance(raw, dict) else {}),
        },
        "annotations": img.manifest.annotations,
        "layers": [
            {
                "digest": d.digest,
                "mediaType": d.media_type,
                "size": d.size,
                "diff_id": diff,
                **({"annotations": d.annotations} if d.annotations else {}),
            }
            for d, diff in zip(img.layers, diff_ids + [""] * len(img.layers), strict=False)
        ],
    }
    if img.manifest.artifact_type or artifact:
        out["artifactType"] = img.manifest.artifact_type or img.config_descriptor.media_type
    return out


def describe(obj: Image | ImageIndex) -> dict:
    if isinstance(obj, Image):
        return {"kind": "image", **describe_image(obj)}
    return {
        "kind": "index",
        "digest": obj.digest,
        "mediaType": obj.media_type,
        "annotations": obj.index.annotations,
        "manifests": [describe_image(img) for _d, img in obj.images()],
    }


FILEPATH_ANNOTATION = "org.cncf.model.filepath"  # ModelPack's name of a layer's file
_CONFIG_KEYS = ("Entrypoint", "Cmd", "User", "WorkingDir")
# one column for every label, two spaces wider than the widest, so no value touches its label
_WIDTH = max(len(k) for k in (*_CONFIG_KEYS, "image", "index", "type", "Env", "Port", "Label")) + 2


def _row(indent: str, label: str, value: str) -> None:
    print(f"{indent}{label:<{_WIDTH}}{value}")


def _print_image(info: dict, indent: str = "") -> None:
    cfg = info["config"].get("config", {}) if not info.get("artifactType") else {}
    where = info["platform"] or "artifact"
    _row(indent, "image", f"{info['digest']}  {where}  ({human_size(info['size'])})")
    inner = indent + "  "
    _row(inner, "type", info["mediaType"])
    if info.get("artifactType"):
        _row(inner, "artifact", info["artifactType"])
    for key in _CONFIG_KEYS:
        if cfg.get(key):
            value = cfg[key]
            _row(inner, key, json.dumps(value) if isinstance(value, list) else str(value))
    for env in cfg.get("Env", []):
        _row(inner, "Env", env)
    for port in cfg.get("ExposedPorts", {}):
        _row(inner, "Port", port)
    for k, v in sorted(cfg.get("Labels", {}).items()):
        _row(inner, "Label", f"{k}={v}")
    print(f"{inner}layers:")
    for layer in info["layers"]:
        path = (layer.get("annotations") or {}).get(FILEPATH_ANNOTATION, "")
        print(
            f"{inner}  {layer['digest']}  {human_size(layer['size']):>9}  "
            f"{layer['mediaType'].rsplit('.', 1)[-1]}" + (f"  {path}" if path else "")
        )


def run(args) -> int:
    obj = open_source(args.source, platform=args.platform, **registry_kwargs(args))
    if args.raw:
        print((obj.raw_manifest if isinstance(obj, Image) else obj.raw).decode())
        return 0
    info = describe(obj)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    if info["kind"] == "index":
        _row("", "index", f"{info['digest']}  ({len(info['manifests'])} platforms)")
        _row("  ", "type", info["mediaType"])
        for img in info["manifests"]:
            _print_image(img, "  ")
    else:
        _print_image(info)
    return 0
