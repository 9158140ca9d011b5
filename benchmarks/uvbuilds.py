"""The uv Dockerfile baseline (rows 1 and 2b): cold and warm-cache builds, and "added one
dependency", ociforge against a Dockerfile that installs with ``uv pip install`` under a
``RUN --mount=type=cache`` (``dockerfile.UV_DOCKERFILE``), built by the same buildah.

* Cold: a fresh storage root with only the uv base pulled, and an empty cache mount (buildah keeps
  cache mounts under ``$TMPDIR/buildah-cache``: a fresh ``TMPDIR`` is an empty uv cache).
* Warm cache: a fresh storage root again (no layer cache: the requirements changed, say), the
  cache mount left by the cold build (every wheel already downloaded and unpacked by uv).
* Added one dependency: the requirements gain ``six``. The Dockerfile, its layer cache and uv
  cache warm, re-runs its install step (and the steps after it); ociforge, its caches warm, builds
  the model with the one more requirement. Each run starts from a copy of the caches as they were
  before ``six`` (hard links), so ``six`` is new to both every time. ociforge's image before and
  after is pushed to a loopback registry: the second push's blob bytes are what a user uploads.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .dockerfile import UV_BASE_NAME, Buildah, Measured, set_requirements
from .stats import Row, Sample

ADDED = "six"


@dataclass
class UvRuns:
    """Every uv Dockerfile measurement of a run."""

    cold_bud: list[Measured] = field(default_factory=list)
    cold_gzip: list[Measured] = field(default_factory=list)  # the push after the cold bud
    cold_zstd: list[Measured] = field(default_factory=list)
    warm_bud: list[Measured] = field(default_factory=list)
    warm_gzip: list[Measured] = field(default_factory=list)
    added_bud: list[Measured] = field(default_factory=list)
    cache: Path | None = None  # the warm cache mount's TMPDIR after the last run


def cold_and_warm(work: Path, uv_base: Path, ctx: Path, i: int, zstd: bool, got: UvRuns, log):
    """One cold and one warm-cache uv Dockerfile build, each pushed to an OCI layout."""
    cache = work / f"uv-cache-{i}"
    shutil.rmtree(cache, ignore_errors=True)
    for kind in ("cold", "warm"):
        b = Buildah(work / f"buildah-uv-{kind}", cache)
        b.remove()
        b.pull_base(uv_base, name=UV_BASE_NAME)
        bud = b.bud(ctx, "localhost/iris-uv:1")
        out = work / f"buildah-uv-{kind}-gzip"
        shutil.rmtree(out, ignore_errors=True)
        gz = b.push("localhost/iris-uv:1", out, "gzip")
        if kind == "cold":
            got.cold_bud.append(bud)
            got.cold_gzip.append(gz)
            if zstd:
                shutil.rmtree(work / "buildah-uv-zstd", ignore_errors=True)
                got.cold_zstd.append(
                    b.push("localhost/iris-uv:1", work / "buildah-uv-zstd", "zstd")
                )
        else:
            got.warm_bud.append(bud)
            got.warm_gzip.append(gz)
        b.remove()
        log(f"{kind} uv Dockerfile: bud {bud.seconds:.1f}s + push gzip {gz.seconds:.1f}s")
    if got.cache is not None and got.cache != cache:
        shutil.rmtree(got.cache, ignore_errors=True)
    got.cache = cache


def hardlink_copy(src: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True)
    return dest


def added_dependency(work: Path, uv_base: Path, ctx: Path, pins: list[str], got: UvRuns, j: int):
    """The Dockerfile's side of one "added one dependency" run: a storage root whose layer cache
    holds the image without ``six`` (built untimed, warm uv cache), then the timed build with it."""
    assert got.cache is not None
    cache = hardlink_copy(got.cache, work / "uv-cache-added")
    b = Buildah(work / "buildah-uv-added", cache)
    try:
        b.remove()
        b.pull_base(uv_base, name=UV_BASE_NAME)
        set_requirements(ctx, pins)
        b.bud(ctx, "localhost/iris-uv:1")  # untimed: the layer cache before the change
        set_requirements(ctx, [*pins, ADDED])
        got.added_bud.append(b.bud(ctx, "localhost/iris-uv:1"))
    finally:
        set_requirements(ctx, pins)
        b.remove()
        shutil.rmtree(cache, ignore_errors=True)


def _s(ms: list[Measured]) -> Sample:
    return Sample([m.seconds for m in ms], "s", max(m.peak_kib for m in ms) if ms else None)


def _plus(a: list[Measured], b: list[Measured]) -> Sample:
    return Sample(
        [x.seconds + y.seconds for x, y in zip(a, b, strict=True)],
        "s",
        max(m.peak_kib for m in a + b),
    )


def rows(got: UvRuns, cold_gzip: Sample, cold_zstd: Sample | None, added: dict) -> list[Row]:
    """Rows 1 (against the uv Dockerfile) and 2b (added one dependency)."""
    kind = "uv Dockerfile"
    bud_note = f"bud alone {_s(got.cold_bud).cell()}"
    out = [
        Row(
            "1. cold build, amd64, gzip layers",
            cold_gzip,
            "uv Dockerfile: buildah bud (empty uv cache) + push (gzip)",
            _plus(got.cold_bud, got.cold_gzip),
            "<= 0.5x",
            0.5,
            note=bud_note,
            baseline_kind=kind,
        ),
    ]
    if cold_zstd is not None and got.cold_zstd:
        out.append(
            Row(
                "1. cold build, amd64, zstd layers",
                cold_zstd,
                "uv Dockerfile: buildah bud (empty uv cache) + push (zstd)",
                _plus(got.cold_bud, got.cold_zstd),
                note=bud_note,
                baseline_kind=kind,
            )
        )
    out.append(
        Row(
            "1. cold build, amd64, gzip layers",
            cold_gzip,
            "uv Dockerfile, warm uv cache: buildah bud + push (gzip)",
            _plus(got.warm_bud, got.warm_gzip),
            note=f"ociforge cold (empty caches) against uv warm; bud alone {_s(got.warm_bud).cell()}",
            baseline_kind=kind,
        )
    )
    if added:
        layer = added["layer_bytes"]
        out += [
            Row(
                f"2b. added one dependency ({ADDED}), amd64",
                added["ours"],
                "uv Dockerfile: buildah bud, layer cache + warm uv cache",
                _s(got.added_bud),
                "<= 0.2x",
                0.2,
                note=f"new layers: {added['new_layers']}",
                baseline_kind=kind,
            ),
            Row(
                f"2b. added one dependency ({ADDED}), bytes pushed",
                Sample([added["pushed"] / 1024], "KiB"),
                f"the new wheel's layer ({layer / 1024:.1f} KiB) + 64 KiB",
                Sample([(layer + 65536) / 1024], "KiB"),
                "<= 1.0x",
                1.0,
                note="to a loopback registry holding the image before the change",
                baseline_kind="bound",
                extra={"pushed_bytes": added["pushed"], "layer_bytes": layer},
            ),
        ]
    return out
