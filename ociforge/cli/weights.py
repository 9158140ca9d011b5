"""``ociforge weights PATH... --to DEST --format modelcar|modelpack``: weights as an artifact.

A KServe modelcar (an image index, a static shell per platform under ``/models``) or a CNCF
ModelPack artifact, written to a registry, ``oci:DIR[:TAG]`` or ``oci-archive:FILE[:TAG]``.
"""

from __future__ import annotations

import os
import sys

from ..errors import InvalidInput
from ..oci.platform import parse_platforms
from ..transports.progress import make_progress
from ..transports.registry.credentials import Credential
from ._common import add_push_options, key_values, registry_kwargs


def register(sub) -> None:
    p = sub.add_parser(
        "weights",
        help="push model weights as a KServe modelcar or a CNCF ModelPack artifact",
        description=(
            "Each large file becomes a layer of its own (uncompressed when its bytes do not "
            "compress), small files share one; the same files give the same digests anywhere."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="weight files and folders")
    p.add_argument(
        "--to",
        required=True,
        metavar="DEST",
        help="registry reference, oci:DIR[:TAG] or oci-archive:FILE[:TAG]",
    )
    p.add_argument(
        "--format",
        choices=("modelcar", "modelpack"),
        default="modelcar",
        help="modelcar (KServe oci://, default) or modelpack (CNCF ModelPack artifact)",
    )
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        help="modelcar platforms (default linux/amd64,linux/arm64)",
    )
    p.add_argument(
        "--compression",
        choices=("auto", "none", "gzip"),
        help="auto: files whose bytes do not compress stay uncompressed (modelcar default); "
        "none (modelpack default); gzip",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="modelpack: each file itself is the layer blob (.raw media types), not a tar",
    )
    p.add_argument("--name", help="modelpack: the model's name (default: the first PATH's name)")
    p.add_argument(
        "--version",
        dest="model_version",
        default="latest",
        metavar="VERSION",
        help="modelpack: the model's version (default latest)",
    )
    p.add_argument(
        "--model-format", help="modelpack: safetensors, gguf, onnx... (default: from the files)"
    )
    p.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="K=V",
        help="modelpack descriptor/config field (description, licenses, paramSize, precision...)",
    )
    p.add_argument("--jobs", type=int, default=4, help="blobs uploaded at once (default 4)")
    p.add_argument(
        "--creds",
        metavar="USER:PASSWORD",
        help="registry credentials (default: $OCIFORGE_DEST_CREDS, then docker/podman's)",
    )
    add_push_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..artifacts.build import weights  # the build's parts (~0.2 s): only for this command

    if args.jobs < 1:
        raise InvalidInput(f"--jobs must be at least 1, not {args.jobs}")
    platforms = [str(x) for x in parse_platforms(args.platform)] if args.platform else None
    opts = registry_kwargs(args)
    creds = args.creds or os.environ.get("OCIFORGE_DEST_CREDS")
    if creds:
        opts["auth"] = Credential.parse(
            creds, source="--creds" if args.creds else "OCIFORGE_DEST_CREDS"
        )
    if args.chunk_size is not None:
        if args.chunk_size < 1:
            raise InvalidInput("--chunk-size must be at least 1 (MiB)")
        opts["chunk_size"] = args.chunk_size << 20
    result = weights(
        args.paths,
        to=args.to,
        format=args.format,
        platforms=platforms,
        compression=args.compression,
        layer_format="raw" if args.raw else "tar",
        name=args.name,
        version=args.model_version,
        model_format=args.model_format,
        metadata=key_values(args.metadata, "--metadata") or None,
        jobs=args.jobs,
        progress=make_progress(args.quiet),
        **opts,
    )
    if not args.quiet:
        print(result.summary(), file=sys.stderr)
        print(f"{result.reference}@{result.digest}")
    return 0
