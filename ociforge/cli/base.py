"""``ociforge base``: build a prebuilt base from a ``base_layers/`` recipe, lock it, list recipes.

``ociforge base build RECIPE --platform linux/amd64,linux/arm64 --to DEST`` builds from the
recipe's locks (resolving and writing a lock only where there is none), so a build is the same
every day; ``ociforge base lock RECIPE`` re-resolves against the mirror's signed index.
"""

from __future__ import annotations

from ..bases import base, debian
from ..oci.image import make_index
from ..oci.platform import parse_platforms
from ..transports.transport import write_to
from ._common import human_size


def register(sub) -> None:
    p = sub.add_parser(
        "base", help="build, lock and list prebuilt base images (base_layers/ recipes)"
    )
    bsub = p.add_subparsers(dest="base_command", metavar="ACTION")

    b = bsub.add_parser("build", help="build a recipe's base for one or more platforms")
    b.add_argument(
        "recipe", metavar="RECIPE", help="a recipe name (see `ociforge base list`) or a .toml path"
    )
    b.add_argument(
        "--platform", action="append", help="linux/amd64,linux/arm64 (default: the recipe's)"
    )
    b.add_argument(
        "--to",
        dest="dest",
        help="oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE or a registry reference",
    )
    _common_options(b)
    b.add_argument(
        "--update-lock", action="store_true", help="re-resolve packages and rewrite the locks first"
    )
    b.set_defaults(func=run_build)

    lk = bsub.add_parser("lock", help="resolve a recipe against the mirror and write its locks")
    lk.add_argument("recipe", metavar="RECIPE")
    lk.add_argument("--platform", action="append", help="platforms to lock (default: the recipe's)")
    _common_options(lk)
    lk.set_defaults(func=run_lock)

    ls = bsub.add_parser("list", help="show the recipes")
    ls.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _common_options(p) -> None:
    p.add_argument(
        "--mirror",
        help="a Debian mirror or snapshot URL (http(s):// or file://) instead of the recipe's",
    )
    p.add_argument(
        "--keyring",
        default=debian.DEFAULT_KEYRING,
        help="OpenPGP keyring for InRelease (default: %(default)s)",
    )


def _platforms(args, recipe):
    return parse_platforms(args.platform) if args.platform else recipe.platforms


def run_build(args) -> int:
    recipe = base.load_recipe(args.recipe)
    images = [
        base.build_platform(
            recipe, p, mirror=args.mirror, update_lock=args.update_lock, keyring=args.keyring
        )
        for p in _platforms(args, recipe)
    ]
    for img in images:
        print(f"{img.platform}\t{img.digest}\t{human_size(img.size)}")
    obj = images[0] if len(images) == 1 else make_index(images)
    if args.dest:
        result = write_to(obj, args.dest)
        print(f"wrote {result.digest} to {args.dest}")
    else:
        print(f"{obj.digest} (cached; give --to DEST to write it out)")
    return 0


def run_lock(args) -> int:
    recipe = base.load_recipe(args.recipe)
    for p in _platforms(args, recipe):
        lock = base.lock_for(
            recipe, p.debian_arch, update=True, mirror=args.mirror, keyring=args.keyring
        )
        size = sum(pkg.size for pkg in lock.packages)
        print(
            f"{recipe.lock_path(p.debian_arch)}\t{len(lock.packages)} packages\t{human_size(size)} of .debs"
        )
    return 0


def run_list(args) -> int:
    for r in base.list_recipes():
        default = f"default for Python {r.python_version}" if r.default else ""
        archs = ",".join(r.architectures)
        print(f"{r.name}\t{r.suite}\t{archs}\t{default}\t{r.description}".rstrip())
    return 0
