"""``ociforge run IMAGE``: start an image's entrypoint here, with no container engine.

The image (any source ``ociforge`` reads) is unpacked once into the cache (``rootfs/<digest>``)
and run under bubblewrap as its user, with its env and working folder, and qemu-user for another
architecture: see :mod:`ociforge.run`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..errors import InvalidInput, NotFound
from ..oci.image import ImageIndex
from ..oci.platform import Platform
from ._common import add_registry_options, registry_kwargs

PORT_HELP = (
    "the port the server listens on (N, or N:N): the image shares the host's network, so there "
    "is no mapping; this sets PORT=N in its environment, which ociforge images (and servers "
    "made for Cloud Run or Heroku) listen on. Without it, the image's own default (8080 for "
    "ociforge images)"
)


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run an image's entrypoint here under bubblewrap (no daemon; qemu-user for "
        "another architecture)",
        description="Unpack IMAGE into the cache (once per digest) and run its entrypoint + cmd "
        "as its user, with its env and working folder, under bubblewrap; a foreign "
        "architecture runs under qemu-user-static. The root is read-only with a tmpfs on /tmp, "
        "the network is the host's. Ctrl-C or SIGTERM stops it (the image's StopSignal is "
        "sent to the program; killed --grace seconds later); the exit status is the program's.",
    )
    p.add_argument(
        "image",
        metavar="IMAGE",
        help="oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, or a registry reference",
    )
    p.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        metavar="ARG",
        help="everything after IMAGE: the command, replacing the image's Cmd (options go "
        "before IMAGE, as for docker run)",
    )
    p.add_argument("--platform", help="which image of an index (default: this machine's)")
    p.add_argument(
        "--entrypoint",
        metavar="PROGRAM",
        help="run this instead of the image's entrypoint (and cmd): e.g. --entrypoint python3 "
        "IMAGE -- -c 'import sklearn'",
    )
    p.add_argument("-p", "--port", metavar="PORT", help=PORT_HELP)
    p.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="set an environment variable (K alone: this shell's value); repeatable",
    )
    p.add_argument(
        "-u", "--user", help="run as this user (uid[:gid] or name) instead of the image's"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a stopped program may take before it is killed (default 10)",
    )
    add_registry_options(p)
    OPTIONS.update(o for action in p._actions for o in action.option_strings)
    p.set_defaults(func=run)


OPTIONS: set[str] = set()  # this command's own options, filled by register()


def _env(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidInput(f"-e {item!r}: expected K=V")
        if not sep:
            if key not in os.environ:
                continue  # as docker run -e K does
            value = os.environ[key]
        out[key] = value
    return out


def _stop_signal(text: str) -> int:
    if not text:
        return signal.SIGTERM
    name = text.strip().upper()
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise InvalidInput(f"the image's StopSignal {text!r} is not a signal") from None


def _pick(obj, platform: str | None):
    """The image to run: ``--platform``'s, else this machine's, else an index's only one."""
    if not isinstance(obj, ImageIndex):
        return obj
    from ..run.sandbox import host_architecture

    if platform is not None:
        return obj.select(platform)
    try:
        return obj.select(f"linux/{host_architecture()}")
    except NotFound:
        images = [img for _d, img in obj.images()]
        if len(images) == 1:
            return images[0]
        raise


def _command(words: list[str], options: set[str]) -> list[str]:
    """The words after IMAGE; one of this command's options there is refused (it would be
    the image's argument), unless ``--`` says the rest is the command."""
    if words and words[0] == "--":
        return words[1:]
    if words and words[0].split("=", 1)[0] in options:
        raise InvalidInput(
            f"{words[0]!r} comes after IMAGE, where the image's command goes: put options "
            f"before IMAGE (ociforge run -p 8080 IMAGE), or '--' before a command that starts "
            f"with {words[0]!r}"
        )
    return words


def run(args) -> int:
    from ..run import launch, process, rootfs, sandbox
    from ..transports.transport import open_source

    platform = Platform.parse(args.platform) if args.platform else None
    if platform is not None:
        sandbox.check(platform)  # before anything is downloaded
    env = {**launch.port_env(args.port), **_env(args.env)}
    image = _pick(open_source(args.image, platform=platform, **registry_kwargs(args)), None)
    sandbox.check(image.platform)
    root = rootfs.cache_root() / image.digest.partition(":")[2]
    if not root.is_dir():
        print(f"unpacking {image.digest} ({image.platform}) into {root}", file=sys.stderr)
    root = rootfs.cached(image, mount_points=sandbox.mount_points(image.platform))
    entrypoint = [args.entrypoint] if args.entrypoint else None
    box = launch.from_image(
        image,
        root,
        command=_command(args.arguments, OPTIONS),
        entrypoint=entrypoint,
        env=env,
        user=args.user,
    )
    emu = sandbox.emulator(image.platform)
    how = f"under {emu}" if emu else "natively"
    port = env.get("PORT") or ", ".join(image.config.config.exposed_ports) or "none declared"
    print(
        f"running {image.platform} {how} as {box.uid}:{box.gid}: {' '.join(box.argv)} "
        f"(host network; port {port})",
        file=sys.stderr,
        flush=True,
    )
    return process.run(
        box, stop_signal=_stop_signal(image.config.config.stop_signal), grace=args.grace
    )
