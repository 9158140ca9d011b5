"""``ociforge example``: build the bundled iris model for linux/amd64 and linux/arm64 (the README's
first command), into a local OCI layout: no registry, no Docker."""

from __future__ import annotations

import sys

from ..examples import iris


def register(sub) -> None:
    p = sub.add_parser("example", help="build the bundled example model into a local OCI layout")
    p.add_argument(
        "--to", default="oci:./out:example", help="destination (default: oci:./out:example)"
    )
    p.add_argument(
        "--platform", action="append", default=[], help="default: linux/amd64 and linux/arm64"
    )
    p.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..builder.build import (  # the build loads every part (~0.2 s): only for this command
        build,
        test,
    )

    model = iris.make_model()
    print(f"local test: {iris.SAMPLE} -> {test(model, iris.SAMPLE)['prediction']}", file=sys.stderr)
    result = build(
        model,
        platforms=args.platform or ["linux/amd64", "linux/arm64"],
        requirements="auto",
        to=args.to,
        name="iris",
        version="1.0.0",
        metadata=iris.METADATA,
        test_sample=iris.SAMPLE,
        compression=args.compression,
    )
    print(f"built {result.reference}@{result.digest}")
    print(
        f"  platforms: {', '.join(map(str, result.platforms))}; {result.size / 1e6:.1f} MB stored"
    )
    print(f"inspect it:  ociforge inspect {result.reference}")
    print(f"push it:     ociforge copy {result.reference} docker://REGISTRY/iris:1.0.0")
    print(
        f"load it:     ociforge copy {result.reference} docker-daemon:iris:1.0.0   # or: skopeo copy {result.reference} docker-daemon:iris:1.0.0"
    )
    print(f"run it:      ociforge run -p 8080 {result.reference}   # no daemon (bubblewrap)")
    print("             or, once loaded: docker run -p 8080:8080 iris:1.0.0")
    print(
        f"             curl -s localhost:8080/predict -H 'content-type: application/json' -d '{iris.SAMPLE}'"
    )
    return 0
