"""``ociforge inspect SRC``: what an image or index holds, as a table or ``--json``."""

from __future__ import annotations

import json

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
    cfg = img.config
    return {
        "digest": img.digest,
        "mediaType": img.media_type,
        "platform": str(img.platform),
        "size": img.size,
        "config": {"digest": img.config_descriptor.digest, **json.loads(img.raw_config)},
        "annotations": img.manifest.annotations,
        "layers": [
            {"digest": d.digest, "mediaType": d.media_type, "size": d.size, "diff_id": diff}
            for d, diff in zip(
                img.layers, list(cfg.diff_ids) + [""] * len(img.layers), strict=False
            )
        ],
    }


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


def _print_image(info: dict, indent: str = "") -> None:
    cfg = info["config"].get("config", {})
    print(f"{indent}image     {info['digest']}  {info['platform']}  ({human_size(info['size'])})")
    print(f"{indent}  type    {info['mediaType']}")
    for key in ("Entrypoint", "Cmd", "User", "WorkingDir"):
        if cfg.get(key):
            print(
                f"{indent}  {key:<10}{json.dumps(cfg[key]) if isinstance(cfg[key], list) else cfg[key]}"
            )
    for env in cfg.get("Env", []):
        print(f"{indent}  Env       {env}")
    for port in cfg.get("ExposedPorts", {}):
        print(f"{indent}  Port      {port}")
    for k, v in sorted(cfg.get("Labels", {}).items()):
        print(f"{indent}  Label     {k}={v}")
    print(f"{indent}  layers:")
    for layer in info["layers"]:
        print(
            f"{indent}    {layer['digest']}  {human_size(layer['size']):>9}  {layer['mediaType'].rsplit('.', 1)[-1]}"
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
        print(f"index     {info['digest']}  ({len(info['manifests'])} platforms)")
        print(f"  type    {info['mediaType']}")
        for img in info["manifests"]:
            _print_image(img, "  ")
    else:
        _print_image(info)
    return 0
