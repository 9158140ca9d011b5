"""Run what is inside an image, for end-to-end tests, with no container engine and no binfmt: a
thin layer over the product's own :mod:`ociforge.run` (unpacking, bubblewrap, qemu-user).

API::

    from tests.support.rootfs import unpack, run, can_run

    root = unpack(image, tmp_path / "rootfs")        # an ociforge.oci.image.Image (any source)
    proc = run(root, ["/usr/bin/python3", "-c", "print(1)"], platform="linux/amd64",
               env=image.config.config.env_dict())   # subprocess.CompletedProcess (text)
    assert proc.returncode == 0, proc.stderr

``unpack(image, dest) -> Path``
    :func:`ociforge.run.rootfs.unpack`: each layer in order (gzip, zstd or plain tar), whiteouts
    and opaque directories applied, nothing written outside ``dest``; modes kept less
    setuid/setgid, owners not copied (the sandbox maps the caller to the image's user).
``run(rootfs, argv, platform="linux/amd64", *, uid=65532, gid=65532, env=None, cwd="/",
      share_net=False, binds=(), qemu="bwrap", timeout=120) -> CompletedProcess``
    ``argv[0]`` is a path inside the image. ``env`` replaces the environment (default: a PATH
    only). ``share_net=True`` keeps the host network (to reach a server on 127.0.0.1).
    ``binds`` are ``(host_path, image_path)`` pairs bound read-only. The root is bound
    read-write (tests may write into it). For a foreign architecture, ``qemu="bwrap"`` runs
    qemu inside the sandbox (uid/gid apply); ``qemu="direct"`` runs
    ``qemu-aarch64-static -L ROOTFS ROOTFS/argv0`` on the host (uid/gid/binds ignored, network
    shared): the plainest emulation, with no namespaces at all.
``start(rootfs, argv, platform, **same options) -> Popen``
    The same, in the background (for servers: stdout and stderr merged, as text).
``can_run(platform) -> str``
    Empty when this machine has what ``run`` needs for ``platform``, else why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ociforge.oci.platform import Platform
from ociforge.run import rootfs as _rootfs
from ociforge.run.sandbox import QEMU, Sandbox, can_run, emulator

__all__ = ["QEMU", "can_run", "command", "run", "start", "unpack"]


def unpack(image, dest: str | os.PathLike) -> Path:
    """Extract ``image``'s layers into ``dest`` (created), honoring whiteouts."""
    return _rootfs.unpack(image, dest)


def command(
    rootfs: str | os.PathLike,
    argv: list[str],
    platform: str | Platform = "linux/amd64",
    *,
    uid: int = 65532,
    gid: int = 65532,
    env: dict[str, str] | None = None,
    cwd: str = "/",
    share_net: bool = False,
    binds: tuple[tuple[str, str], ...] = (),
    qemu: str = "bwrap",
) -> tuple[list[str], dict[str, str], Path | None]:
    """The host command line (and its environment and folder) that runs ``argv`` in ``rootfs``."""
    root = Path(rootfs).resolve()
    p = Platform.parse(platform)
    env = dict(env) if env is not None else {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    name = emulator(p)
    if name and qemu == "direct":
        cmd = [shutil.which(name) or name, "-L", str(root), str(root / argv[0].lstrip("/"))]
        return [*cmd, *argv[1:]], env, root
    box = Sandbox(
        rootfs=root, argv=list(argv), platform=p, uid=uid, gid=gid, env=env, cwd=cwd,
        share_net=share_net, read_only=False, binds=tuple(binds),
    )  # fmt: skip
    return box.command(), {}, None


def run(
    rootfs: str | os.PathLike,
    argv: list[str],
    platform: str | Platform = "linux/amd64",
    *,
    timeout: float = 120,
    **kw,
) -> subprocess.CompletedProcess:
    """Run ``argv`` (paths inside the image) in ``rootfs`` for ``platform``; see :func:`command`."""
    cmd, env, cwd = command(rootfs, argv, platform, **kw)
    return subprocess.run(
        cmd, env=env or None, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def start(
    rootfs: str | os.PathLike,
    argv: list[str],
    platform: str | Platform = "linux/amd64",
    **kw,
) -> subprocess.Popen:
    """Start ``argv`` in ``rootfs`` in the background (a server), output captured as text."""
    cmd, env, cwd = command(rootfs, argv, platform, **kw)
    return subprocess.Popen(
        cmd, env=env or None, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
