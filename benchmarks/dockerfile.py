"""The Dockerfile way, with Debian's buildah: the baseline of the build rows.

What a user does today: a Python base image, ``pip install`` of pinned requirements in a ``RUN``
step, then ``COPY`` of the server and the model (last, so a model change reuses the pip layer).
Built by ``buildah bud --isolation chroot --layers --storage-driver overlay`` into a fresh storage
root (overlay, not vfs: vfs copies the whole rootfs at every step and would make buildah's cached
rebuilds far slower than what Docker users see). The base is pulled into that storage before the
timer starts ("base already there", as the ociforge side has its base built). A build's output is
then pushed to an OCI layout with gzip or zstd layers, the same kind of output ociforge writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtimes" / "ociforge_runtime"
BASE_NAME = "localhost/bench-dockerfile-base:latest"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"

DOCKERFILE = """\
FROM {base}
WORKDIR /opt/ociforge/app
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY runtime /opt/ociforge/runtime/ociforge_runtime
COPY model /opt/ociforge/model
ENV PYTHONPATH=/opt/ociforge/runtime OCIFORGE_MODEL_DIR=/opt/ociforge/model PORT=8080
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python3", "-m", "ociforge_runtime"]
"""

# The 2026 way (uv's Docker guide): uv in the base (as ``COPY --from`` its image would put it), the
# install step with a cache mount that outlives the build, ``--link-mode=copy`` since the cache
# is another file system. ``SSL_CERT_FILE`` is a build argument, so uv trusts the host's CA bundle
# bind-mounted for the ``RUN`` step (see :func:`trust_mount`) and the image keeps no trace of it.
# No ``--compile-bytecode`` (uv's default): the fastest build uv offers, the baseline at its best.
UV_BASE_NAME = "localhost/bench-dockerfile-base-uv:latest"
UV_DOCKERFILE = """\
FROM {base}
ARG SSL_CERT_FILE
WORKDIR /opt/ociforge/app
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/uv \\
    uv pip install --system --break-system-packages --link-mode=copy -r /tmp/requirements.txt
COPY runtime /opt/ociforge/runtime/ociforge_runtime
COPY model /opt/ociforge/model
ENV PYTHONPATH=/opt/ociforge/runtime OCIFORGE_MODEL_DIR=/opt/ociforge/model PORT=8080
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python3", "-m", "ociforge_runtime"]
"""


def write_context(
    ctx: Path, pins: list[str], model_files: dict[str, bytes], installer: str = "pip"
) -> Path:
    """The Dockerfile (``installer`` pip or uv) and its build context: requirements, the ociforge
    runtime, the model."""
    ctx.mkdir(parents=True, exist_ok=True)
    text = UV_DOCKERFILE.format(base=UV_BASE_NAME) if installer == "uv" else None
    (ctx / "Dockerfile").write_text(text or DOCKERFILE.format(base=BASE_NAME))
    set_requirements(ctx, pins)
    if not (ctx / "runtime").is_dir():
        shutil.copytree(
            RUNTIME, ctx / "runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    set_model(ctx, model_files)
    return ctx


def set_requirements(ctx: Path, pins: list[str]) -> None:
    """The context's requirements.txt (the "added one dependency" change rewrites it)."""
    (ctx / "requirements.txt").write_text("".join(p + "\n" for p in pins))


def set_model(ctx: Path, model_files: dict[str, bytes]) -> None:
    """Replace the model in the context (the "model-only change")."""
    d = ctx / "model"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    for name, data in model_files.items():
        (d / name).write_bytes(data)


def model_files_from_layout(layout: Path, layer_digest: str) -> dict[str, bytes]:
    """The model package (model.pkl, model.json) out of an ociforge image's model layer, so both
    images serve the very same bytes."""
    blob = layout / "blobs" / "sha256" / layer_digest.split(":", 1)[1]
    out = {}
    with open(blob, "rb") as raw:
        head = raw.read(4)
        raw.seek(0)
        if head == b"\x28\xb5\x2f\xfd":
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(raw)
        else:
            import gzip

            stream = gzip.GzipFile(fileobj=raw)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for ti in tar:
                if ti.isfile() and ti.name.startswith("opt/ociforge/model/"):
                    out[ti.name.rsplit("/", 1)[1]] = tar.extractfile(ti).read()
    if "model.pkl" not in out:
        raise RuntimeError(f"no model in layer {layer_digest}")
    return out


def trust_mount() -> list[str]:
    """The machine's CA bundle over the image's for ``RUN`` steps (not in the image): where the
    way to PyPI is a TLS-inspecting proxy, pip in the container must trust what the host does,
    as a user behind that proxy would arrange."""
    bundle = os.environ.get("SSL_CERT_FILE") or HOST_CA
    if not Path(bundle).is_file():
        return []
    return ["-v", f"{Path(bundle).resolve()}:{HOST_CA}:ro"]


@dataclass
class Measured:
    seconds: float
    peak_kib: int


def measured(cmd: list[str], env: dict | None = None) -> Measured:
    """Run ``cmd`` under :mod:`benchmarks.peak`; its output goes to a log, failures raise."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.peak", "--", *cmd],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"{cmd[:3]}: {proc.stderr[-3000:]}") from None
    if out["rc"]:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({out['rc']}): {proc.stderr[-3000:]}")
    return Measured(out["seconds"], out["peak_kib"])


class Buildah:
    """One buildah storage root (overlay) and the commands the benchmark runs against it."""

    def __init__(self, root: Path, cache_tmp: Path | None = None) -> None:
        """``cache_tmp``: the ``TMPDIR`` buildah keeps ``RUN --mount=type=cache`` folders under
        (``$TMPDIR/buildah-cache-0``); a fresh one is an empty cache, the same one a warm cache."""
        self.root = root
        self.cache_tmp = cache_tmp
        self.flags = [
            "--root", str(root / "storage"), "--runroot", str(root / "run"),
            "--storage-driver", "overlay",
        ]  # fmt: skip

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["buildah", *self.flags, *args], capture_output=True, text=True, check=check
        )

    def pull_base(self, layout: Path, platform: str = "linux/amd64", name: str = BASE_NAME) -> None:
        """Untimed: the base into this storage under the name the Dockerfile uses. (buildah names
        a pulled layout after its path, and a path with ``.cache`` in it is no valid name: pull
        through a plain-named link.)"""
        link = self.root / "base-layout"
        self.root.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(layout.resolve())
        image_id = self._run("pull", "-q", "--platform", platform, f"oci:{link}:base")
        image_id = image_id.stdout.strip().splitlines()[-1]
        self._run("tag", image_id, name)

    def bud(self, ctx: Path, tag: str) -> Measured:
        env = None
        if self.cache_tmp is not None:
            self.cache_tmp.mkdir(parents=True, exist_ok=True)
            env = {"TMPDIR": str(self.cache_tmp)}
        trust = trust_mount()
        args = ["--build-arg", f"SSL_CERT_FILE={HOST_CA}"] if trust else []
        return measured(
            ["buildah", *self.flags, "bud", "--isolation", "chroot", "--layers", *trust, *args]
            + ["-q", "-t", tag, "-f", str(ctx / "Dockerfile"), str(ctx)],
            env,
        )

    def try_bud(self, ctx: Path, tag: str, platform: str) -> tuple[bool, str]:
        """Whether a build for ``platform`` works here, and the last line buildah said."""
        proc = subprocess.run(
            ["buildah", *self.flags, "bud", "--isolation", "chroot", "--layers", *trust_mount()]
            + ["--platform", platform, "-t", tag, "-f", str(ctx / "Dockerfile"), str(ctx)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        text = proc.stderr + proc.stdout
        said = next(
            (m.strip() for m in re.findall(r"[^\n]*exec format error", text)),
            next((ln for ln in reversed(text.splitlines()) if ln.strip()), ""),
        )
        said = said.split("process exited")[0].replace("process failed to start with error: ", "")
        return proc.returncode == 0, said.strip()

    def push(self, tag: str, layout: Path, compression: str) -> Measured:
        """The built image to an OCI layout (tag ``latest``) with ``compression`` layers."""
        return measured(
            ["buildah", *self.flags, "push", "-q", "--format", "oci"]
            + ["--compression-format", compression, tag, f"oci:{layout}:latest"]
        )

    def remove(self) -> None:
        """Unmount and delete the storage root (overlay leaves mounts behind otherwise)."""
        self._run("rm", "--all", check=False)
        self._run("rmi", "--all", "--force", check=False)
        for line in Path("/proc/mounts").read_text().splitlines():
            mnt = line.split()[1]
            if mnt.startswith(str(self.root)):
                subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
