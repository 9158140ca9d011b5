"""``ociforge assemble``: local files as layers on top of any base, to any destination."""

from __future__ import annotations

from ..builder.assemble import Addition, assemble
from ..cachedir import default_cache_dir
from ..oci.blobstore import BlobStore
from ..oci.image import ConfigChanges
from ..transports.transport import open_source, write_to
from ._common import add_registry_options, command_line, key_values, registry_kwargs


def register(sub) -> None:
    p = sub.add_parser(
        "assemble",
        help="append local files as layers to a base image (or scratch) and write the result",
        description="Like `crane append` + `crane mutate`: each --add becomes one layer.",
    )
    p.add_argument("--base", metavar="SRC", help="base image (any transport); omit for scratch")
    p.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="LOCAL:IMAGE",
        help="a file or folder and where it goes in the image",
    )
    p.add_argument(
        "--entrypoint", help='JSON array or shell-quoted string, e.g. \'["python3","-m","app"]\''
    )
    p.add_argument("--cmd", help="JSON array or shell-quoted string")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--annotation", action="append", default=[], metavar="K=V", help="manifest/index annotation"
    )
    p.add_argument("--workdir")
    p.add_argument("--user")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]")
    p.add_argument(
        "--platform", action="append", default=[], help="platform(s), e.g. linux/amd64,linux/arm64"
    )
    p.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    p.add_argument(
        "--format",
        choices=("oci", "docker"),
        default="oci",
        help="media types (docker: schema 2, gzip only)",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="DEST",
        help="oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] or a registry reference",
    )
    p.add_argument(
        "--cache", metavar="DIR", help="blob cache (default: $OCIFORGE_CACHE or ~/.cache/ociforge)"
    )
    add_registry_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    additions = [Addition.parse(a) for a in args.add]
    changes = ConfigChanges(
        entrypoint=command_line(args.entrypoint, "--entrypoint"),
        cmd=command_line(args.cmd, "--cmd"),
        env=key_values(args.env, "--env") or None,
        labels=key_values(args.label, "--label") or None,
        working_dir=args.workdir,
        user=args.user,
        exposed_ports=args.expose or None,
    )
    reg = registry_kwargs(args)
    base = open_source(args.base, **reg) if args.base else None
    store = BlobStore(args.cache or default_cache_dir())
    result = assemble(
        base,
        additions,
        platforms=args.platform,
        changes=changes,
        compression=args.compression,
        docker=args.format == "docker",
        annotations=key_values(args.annotation, "--annotation"),
        store=store,
        base_name=args.base,
    )
    written = write_to(result, args.to, **reg)
    print(f"{written.reference}@{written.digest}")
    return 0
