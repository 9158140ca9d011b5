"""The host side of running an image: what bubblewrap and qemu-user need, and the command line
that runs a program in an unpacked tree.

bubblewrap (``bwrap``) gives the program its own user, pid, ipc and uts namespaces with the tree
bound at ``/``, its own ``/proc``, ``/dev`` and a ``/tmp`` tmpfs, and no way to gain privileges
(``no_new_privs``): no daemon and no root needed. The network is the host's (``--share-net``), so
a server in the sandbox listens on the host's ports. A program for another architecture runs
under the static qemu-user binary of that architecture, bound into the sandbox and called
directly: nothing on the host changes (no ``binfmt_misc`` registration). A program that
``exec``\\ s another foreign binary needs the host's ``binfmt_misc`` for that.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OciforgeError
from ..oci.platform import Platform

# the static qemu-user binary for each architecture (Debian: qemu-user-static, or qemu-user with
# the binaries of the same names in trixie and later)
QEMU = {
    "amd64": "qemu-x86_64-static",
    "arm64": "qemu-aarch64-static",
    "arm": "qemu-arm-static",
    "386": "qemu-i386-static",
    "ppc64le": "qemu-ppc64le-static",
    "s390x": "qemu-s390x-static",
    "riscv64": "qemu-riscv64-static",
}
BWRAP_PACKAGE = "bubblewrap"  # the Debian (and Fedora, Arch, Alpine) package of bwrap
QEMU_PACKAGE = "qemu-user-static"
QEMU_PATH = "/.qemu-static"  # where the emulator is bound in the sandbox (a file made at unpack)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxUnavailable(OciforgeError):
    """This host lacks what running an image needs (bubblewrap, or qemu-user for the image's
    architecture); the message names the Debian package that brings it."""


def host_architecture() -> str:
    """This machine's architecture as OCI names it (``amd64``, ``arm64``...)."""
    return Platform.parse(f"linux/{os.uname().machine}").architecture


def emulator(platform: str | Platform) -> str | None:
    """The qemu-user binary ``platform`` needs here (its name), or None when it runs natively."""
    p = Platform.parse(platform)
    if p.architecture == host_architecture():
        return None
    name = QEMU.get(p.architecture)
    if name is None:
        raise SandboxUnavailable(f"{p}: ociforge knows no qemu-user emulator for this architecture")
    return name


def mount_points(platform: str | Platform) -> tuple[str, ...]:
    """What the sandbox mounts onto in the tree's root, for :func:`~.rootfs.cached` to make at
    unpack time, so that starting a sandbox never writes into a cached tree (the emulator's
    file, a name starting with ``.``, only for a foreign architecture)."""
    base = ("proc", "dev", "tmp")
    return (*base, QEMU_PATH.lstrip("/")) if emulator(platform) else base


def check(platform: str | Platform) -> None:
    """Raise :class:`SandboxUnavailable` naming the package to install when ``platform``'s
    programs cannot be run on this host."""
    p = Platform.parse(platform)
    if p.os != "linux":
        raise SandboxUnavailable(f"{p}: only linux images can be run")
    if not shutil.which("bwrap"):
        raise SandboxUnavailable(
            f"running an image needs bubblewrap (bwrap), which is not on PATH: install the "
            f"Debian package {BWRAP_PACKAGE!r} (apt-get install {BWRAP_PACKAGE})"
        )
    name = emulator(p)
    if name is not None and not shutil.which(name):
        raise SandboxUnavailable(
            f"running a {p} image on this {host_architecture()} host needs {name}, which is not "
            f"on PATH: install the Debian package {QEMU_PACKAGE!r} (apt-get install {QEMU_PACKAGE})"
        )


def can_run(platform: str | Platform) -> str:
    """Empty when this host can run ``platform``'s programs, else why not."""
    try:
        check(platform)
    except SandboxUnavailable as e:
        return str(e)
    return ""


@dataclass
class Sandbox:
    """One program to run in an unpacked tree.

    ``argv[0]`` is a path inside the tree (or a name :mod:`.launch` looked up on the image's
    PATH). ``env`` replaces the environment. ``read_only`` binds the tree read-only (what
    ``ociforge run`` does: the cached tree is shared by every run), with a tmpfs on ``/tmp``;
    ``share_net`` keeps the host's network. ``binds`` are ``(host_path, image_path)`` pairs,
    bound read-only.
    """

    rootfs: Path
    argv: list[str]
    platform: Platform = field(default_factory=lambda: Platform.parse("linux/amd64"))
    uid: int = 65532
    gid: int = 65532
    env: dict[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    cwd: str = "/"
    share_net: bool = True
    read_only: bool = True
    binds: tuple[tuple[str, str], ...] = ()

    def command(self) -> list[str]:
        """The host command line: ``bwrap ... -- [qemu] argv``."""
        root = Path(self.rootfs).resolve()
        cmd = [
            "bwrap",
            "--bind", str(root), "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",  # no ioctl(TIOCSTI) into the caller's terminal
            "--uid", str(self.uid),
            "--gid", str(self.gid),
            "--chdir", self.cwd,
            "--clearenv",
        ]  # fmt: skip
        if self.share_net:
            cmd.append("--share-net")
        if self.read_only:
            cmd += ["--perms", "1777", "--tmpfs", "/tmp"]
        for host, inside in self.binds:
            cmd += ["--ro-bind", str(host), inside]
        for k, v in self.env.items():
            cmd += ["--setenv", k, v]
        name = emulator(self.platform)
        if name is not None:
            cmd += ["--ro-bind", shutil.which(name) or name, QEMU_PATH]
        if self.read_only:
            cmd += ["--remount-ro", "/"]
        cmd.append("--")
        if name is not None:
            cmd += [QEMU_PATH, "-0", self.argv[0], *self.argv]
        else:
            cmd += self.argv
        return cmd
