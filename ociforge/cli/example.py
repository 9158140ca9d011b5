"""``ociforge example``: build the bundled example into a local OCI layout (the README's first command).

Until the model build lands, the example assembles the ociforge runtime's sources as a layer on
scratch for linux/amd64 and linux/arm64, which exercises the whole layer → config → manifest →
index → layout path with no registry and no network.
"""

from __future__ import annotations

from pathlib import Path

from ..assemble import Addition, assemble
from ..image import ConfigChanges
from ..transport import write_to


def register(sub) -> None:
    p = sub.add_parser("example", help="build the bundled example image into a local OCI layout")
    p.add_argument(
        "--to", default="oci:./out:example", help="destination (default: oci:./out:example)"
    )
    p.add_argument(
        "--platform", action="append", default=[], help="default: linux/amd64 and linux/arm64"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import ociforge_runtime

    runtime_dir = Path(ociforge_runtime.__file__).parent
    platforms = args.platform or ["linux/amd64", "linux/arm64"]
    obj = assemble(
        None,
        [
            Addition(
                str(runtime_dir), "/opt/ociforge/runtime/ociforge_runtime", ("__pycache__", "*.pyc")
            )
        ],
        platforms=platforms,
        changes=ConfigChanges(
            entrypoint=["python3", "-m", "ociforge_runtime"],
            env={"PYTHONPATH": "/opt/ociforge/runtime", "PORT": "8080"},
            exposed_ports=["8080"],
            user="65532",
        ),
        annotations={"org.opencontainers.image.title": "ociforge-example"},
    )
    result = write_to(obj, args.to)
    print(f"wrote {result.reference}@{result.digest}")
    print(f"inspect it:  ociforge inspect {result.reference}")
    print(f"push it:     ociforge copy {result.reference} docker://REGISTRY/REPO:TAG")
    return 0
