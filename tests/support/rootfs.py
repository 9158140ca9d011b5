"""Run what is inside an image, for end-to-end tests, with no container engine and no binfmt.

An image's layers are unpacked into a directory (whiteouts applied, paths kept inside it), then a
command runs there: linux/amd64 under bubblewrap (``bwrap``, user/pid/net/ipc namespaces, the
rootfs bound at ``/``), linux/arm64 under ``qemu-aarch64-static`` (either inside bwrap, where the
static qemu binary is bound in and called directly, or called directly on the host with ``-L``).

API::

    from tests.support.rootfs import unpack, run, can_run

    root = unpack(image, tmp_path / "rootfs")        # an ociforge.oci.image.Image (any source)
    proc = run(root, ["/usr/bin/python3", "-c", "print(1)"], platform="linux/amd64",
               env=image.config.config.env_dict())   # subprocess.CompletedProcess (text)
    assert proc.returncode == 0, proc.stderr

``unpack(image, dest) -> Path``
    Extracts each layer in order (gzip, zstd or plain tar), applying ``.wh.`` whiteouts and
    opaque directories. Owners and modes are kept (tests run as root). Returns ``dest``.
``run(rootfs, argv, platform="linux/amd64", *, uid=65532, gid=65532, env=None, cwd="/",
      share_net=False, binds=(), qemu="bwrap", timeout=120) -> CompletedProcess``
    ``argv[0]`` is a path inside the image. ``env`` replaces the environment (default: a PATH
    only). ``share_net=True`` keeps the host network (to reach a server on 127.0.0.1).
    ``binds`` are ``(host_path, image_path)`` pairs bound read-only. For arm64, ``qemu="bwrap"``
    runs qemu inside the sandbox (uid/gid apply); ``qemu="direct"`` runs
    ``qemu-aarch64-static -L ROOTFS ROOTFS/argv0`` on the host (uid/gid/binds ignored, network
    shared): the plainest emulation, with no namespaces at all.
``start(rootfs, argv, platform, **same options) -> Popen``
    The same, in the background (for servers: stdout and stderr merged, as text).
``can_run(platform) -> str``
    Empty when this machine has what ``run`` needs for ``platform``, else why not (for skips).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from ociforge.oci.layer import decompressor
from ociforge.oci.platform import Platform

QEMU = {"arm64": "qemu-aarch64-static"}


def _layer_stream(image, desc):
    raw = image.open_layer(desc)
    return decompressor(raw, desc.media_type), raw


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _inside(root: Path, name: str) -> Path:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"layer member {name!r} escapes the rootfs")
    return root.joinpath(*parts) if parts else root


def unpack(image, dest: str | os.PathLike) -> Path:
    """Extract ``image``'s layers into ``dest`` (created), honoring whiteouts."""
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    for desc in image.layers:
        stream, raw = _layer_stream(image, desc)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for ti in tar:
                    head, _, base = ti.name.rstrip("/").rpartition("/")
                    if base == ".wh..wh..opq":
                        d = _inside(root, head)
                        if d.is_dir():
                            for child in d.iterdir():
                                _remove(child)
                        continue
                    if base.startswith(".wh."):
                        _remove(_inside(root, f"{head}/{base[4:]}"))
                        continue
                    target = _inside(root, ti.name)
                    real_parent = os.path.realpath(target.parent)
                    if real_parent != str(root.resolve()) and not real_parent.startswith(
                        str(root.resolve()) + "/"
                    ):
                        raise ValueError(
                            f"layer member {ti.name!r} would land outside the rootfs (via a symlink)"
                        )
                    if (target.exists() or target.is_symlink()) and not (
                        ti.isdir() and target.is_dir()
                    ):
                        _remove(target)
                    tar.extract(ti, root, set_attrs=True, filter="fully_trusted")
        finally:
            raw.close()
    return root


def can_run(platform: str | Platform) -> str:
    p = Platform.parse(platform)
    if not shutil.which("bwrap"):
        return "bwrap (bubblewrap) is not installed"
    if p.architecture == "amd64":
        return "" if os.uname().machine == "x86_64" else "host is not x86_64"
    q = QEMU.get(p.architecture)
    if q is None:
        return f"no emulator known for {p}"
    return "" if shutil.which(q) else f"{q} is not installed"


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
    emulator = QEMU.get(p.architecture) if p.architecture != "amd64" else None
    if emulator and qemu == "direct":
        cmd = [
            shutil.which(emulator) or emulator,
            "-L",
            str(root),
            str(root / argv[0].lstrip("/")),
            *argv[1:],
        ]
        return cmd, env, root
    cmd = [
        "bwrap",
        "--bind",
        str(root),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--unshare-all",
        "--die-with-parent",
        "--uid",
        str(uid),
        "--gid",
        str(gid),
        "--chdir",
        cwd,
        "--clearenv",
    ]
    if share_net:
        cmd.append("--share-net")
    for host, inside in binds:
        cmd += ["--ro-bind", str(host), inside]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    if emulator:
        qpath = shutil.which(emulator) or emulator
        cmd += ["--ro-bind", qpath, "/.qemu-static", "--", "/.qemu-static", *argv]
    else:
        cmd += ["--", *argv]
    return cmd, {}, None


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
