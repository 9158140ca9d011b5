"""Rows 1-4: cold builds, rebuilds and multi-arch, ociforge against the Dockerfile way (buildah).

Cold means: an ``OCIFORGE_CACHE`` holding only the built base, an empty uv cache, wheels fetched
from PyPI (the machine's pip configuration, which may point at local mirrors, is switched off
for both sides); for buildah a fresh storage root with only the base pulled. Each run alternates
which side goes first, so drift on a shared machine falls on both.

Rebuilds reuse the last cold run's state (ociforge: its cache and output layout; buildah: its
storage with the layer cache). A "model-only" rebuild refits the model (new ``model.pkl``, same
everything else); "nothing changed" builds the same inputs again. buildah's rebuild is
``buildah bud`` alone, its image left in its storage as ``docker build`` leaves it in the daemon:
the strict baseline (exporting to an OCI layout recompresses every layer, ~10 s here, which is
recorded in the JSON but not held against buildah).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import uvbuilds
from .bases import Bases, seed_cache
from .dockerfile import Buildah, model_files_from_layout, set_model, write_context
from .stats import Row, Sample

ROOT = Path(__file__).resolve().parents[1]
AMD64 = ["linux/amd64"]
BOTH = ["linux/amd64", "linux/arm64"]
PIP_ENV_DROP = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")


@dataclass
class ForgeState:
    """An ociforge cache, uv cache and output layout that builds go on using."""

    cache: Path
    uv: Path
    out: Path
    last: dict = field(default_factory=dict)


def pypi_env(state: ForgeState) -> dict[str, str]:
    """The child's environment: these caches, PyPI only (no pip.conf mirrors or find-links).
    ``PYTHONDONTWRITEBYTECODE`` is dropped: an installed ociforge has its modules' .pyc (pip
    compiles them), and this checkout should not compile ~90 modules in every timed build."""
    env = {k: v for k, v in os.environ.items() if k not in PIP_ENV_DROP}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {
        "OCIFORGE_CACHE": str(state.cache),
        "UV_CACHE_DIR": str(state.uv),
        "PIP_CONFIG_FILE": os.devnull,
    }
    return env


def fresh_state(work: Path, name: str, bases: Bases) -> ForgeState:
    d = work / name
    shutil.rmtree(d, ignore_errors=True)
    state = ForgeState(seed_cache(bases.seed, d / "cache"), d / "uv", d / "out")
    state.uv.mkdir(parents=True)
    return state


def forge(
    state: ForgeState,
    platforms: list[str],
    compression: str = "gzip",
    variant: int = 0,
    more: tuple[str, ...] = (),
):
    """One ociforge build in its own process; returns its report (build_s, peak_kib, ...).
    ``more``: further ``forge_build`` options (``--add six``, ``--grpc``)."""
    cmd = [sys.executable, "-m", "benchmarks.forge_build", "--to", f"oci:{state.out}:iris"]
    cmd += [a for p in platforms for a in ("--platform", p)]
    cmd += ["--compression", compression, "--variant", str(variant), *more]
    proc = subprocess.run(cmd, cwd=ROOT, env=pypi_env(state), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"ociforge build failed: {proc.stderr[-3000:]}")
    state.last = json.loads(proc.stdout)
    return state.last


def model_layer(report: dict) -> str:
    return next(x["digest"] for x in report["layers"]["linux/amd64"] if x["what"] == "model")


def _sample(reports: list[dict], key: str = "build_s") -> Sample:
    return Sample([r[key] for r in reports], "s", max(r["peak_kib"] for r in reports))


def _phases(reports: list[dict]) -> dict[str, list[float]]:
    """Each step's wall time in every run (``forge_build``'s ``phases``): where a cold build's
    time goes, for the JSON beside its row."""
    steps = sorted({k for r in reports for k in r.get("phases", {})})
    return {k: [r.get("phases", {}).get(k, 0.0) for r in reports] for k in steps}


def _bsample(ms: list) -> Sample:
    return Sample([m.seconds for m in ms], "s", max(m.peak_kib for m in ms))


@dataclass
class BuildResults:
    rows: list[Row]
    gzip_image: Path  # ociforge amd64 gzip layout (tag iris)
    multi_image: Path  # ociforge amd64+arm64 gzip layout (tag iris)
    dockerfile_image: Path  # buildah's image, gzip, OCI layout (tag latest)
    model_variant: int  # the variant both images now hold
    model_files: dict = field(default_factory=dict)  # that model's package (model.pkl, ...)
    state: ForgeState | None = None  # the amd64 gzip builds' caches (warm)


def run(work: Path, bases: Bases, runs: int, log, zstd: bool = True) -> BuildResults:
    """Rows 1-4. ``zstd=False`` (``--quick``) skips the zstd cold builds and the exports of
    buildah's rebuilds (JSON only)."""
    cold = {"gzip": [], "zstd": [], "multi": []}
    bud, push_g, push_z = [], [], []
    g = z = m = None
    buildah: Buildah | None = None
    ctx, ctx_uv = work / "context", work / "context-uv"
    uv = uvbuilds.UvRuns()
    sides = ("forge", "buildah", "uv")
    for i in range(runs):
        order = sides[i % 3 :] + sides[: i % 3]  # each side first in turn
        for side in order:
            if side == "forge":
                g = fresh_state(work, "forge-gzip", bases)
                cold["gzip"].append(forge(g, AMD64, "gzip"))
                log(f"cold ociforge gzip: {g.last['build_s']:.1f}s")
                if zstd:
                    z = fresh_state(work, "forge-zstd", bases)
                    cold["zstd"].append(forge(z, AMD64, "zstd"))
                    log(f"cold ociforge zstd: {z.last['build_s']:.1f}s")
                m = fresh_state(work, "forge-multi", bases)
                cold["multi"].append(forge(m, BOTH, "gzip"))
                log(f"cold ociforge amd64+arm64: {m.last['build_s']:.1f}s")
                continue
            if g is None:  # the contexts need the pins and model of an ociforge build
                g = fresh_state(work, "forge-gzip", bases)
                cold["gzip"].append(forge(g, AMD64, "gzip"))
            if not ctx.is_dir():
                files = model_files_from_layout(g.out, model_layer(g.last))
                write_context(ctx, g.last["pins"], files)
                write_context(ctx_uv, g.last["pins"], files, "uv")
            if side == "uv":
                uvbuilds.cold_and_warm(work, bases.uv_base, ctx_uv, i, zstd, uv, log)
            else:
                if buildah is not None:
                    buildah.remove()
                buildah = Buildah(work / "buildah")
                buildah.pull_base(bases.dockerfile_base)
                bud.append(buildah.bud(ctx, "localhost/iris:1"))
                shutil.rmtree(work / "buildah-gzip", ignore_errors=True)
                shutil.rmtree(work / "buildah-zstd", ignore_errors=True)
                push_g.append(buildah.push("localhost/iris:1", work / "buildah-gzip", "gzip"))
                if zstd:
                    push_z.append(buildah.push("localhost/iris:1", work / "buildah-zstd", "zstd"))
                log(
                    f"cold buildah: bud {bud[-1].seconds:.1f}s + push gzip "
                    f"{push_g[-1].seconds:.1f}s"
                    + (f" / zstd {push_z[-1].seconds:.1f}s" if zstd else "")
                )
    assert g and m and buildah
    # the cold "gzip" sample may hold an extra build made for the context: keep `runs` of them
    cold["gzip"] = cold["gzip"][-runs:]

    arm_ok, arm_said = _buildah_arm64(work, bases, ctx)
    log(f"buildah --platform linux/arm64: {'built' if arm_ok else arm_said}")

    # rebuilds
    r = {k: [] for k in ("one", "one_same", "multi", "multi_same")}
    b_model, b_same, b_push = [], [], []
    variant = 0
    for j in range(runs):
        variant = 100 + j
        r["one"].append(forge(g, AMD64, "gzip", variant))
        r["one_same"].append(forge(g, AMD64, "gzip", variant))
        r["multi"].append(forge(m, BOTH, "gzip", variant))
        r["multi_same"].append(forge(m, BOTH, "gzip", variant))
        set_model(ctx, model_files_from_layout(g.out, model_layer(r["one"][-1])))
        b_model.append(buildah.bud(ctx, "localhost/iris:1"))
        b_same.append(buildah.bud(ctx, "localhost/iris:1"))
        if zstd:
            b_push.append(buildah.push("localhost/iris:1", work / "buildah-gzip", "gzip"))
        log(
            f"rebuild {j}: ociforge model-only {r['one'][-1]['build_s']:.2f}s "
            f"(both {r['multi'][-1]['build_s']:.2f}s), same {r['one_same'][-1]['build_s']:.2f}s; "
            f"buildah bud {b_model[-1].seconds:.2f}s, same {b_same[-1].seconds:.2f}s"
            + (f", push {b_push[-1].seconds:.1f}s" if b_push else "")
        )
    same_digest = all(
        a["digest"] == b["digest"] for a, b in zip(r["one"], r["one_same"], strict=True)
    )
    buildah.remove()
    model_now = model_files_from_layout(g.out, model_layer(r["one"][-1]))
    set_model(ctx_uv, model_now)
    added = added_dependency(work, bases, g, ctx_uv, uv, variant, runs, log)

    bud_s = [b.seconds for b in bud]
    gz = Sample(
        [a + b.seconds for a, b in zip(bud_s, push_g, strict=True)],
        "s",
        max(x.peak_kib for x in bud + push_g),
    )
    zs = (
        Sample(
            [a + b.seconds for a, b in zip(bud_s, push_z, strict=True)],
            "s",
            max(x.peak_kib for x in bud + push_z),
        )
        if zstd
        else None
    )
    bud_note = f"bud alone {Sample(bud_s).cell()}"
    rows = [
        Row(
            "1. cold build, amd64, gzip layers",
            _sample(cold["gzip"]),
            "pip Dockerfile: buildah bud + push (gzip) to an OCI layout",
            gz,
            "<= 0.33x",
            1 / 3,
            note=bud_note,
            extra={
                "process_s": [x["process_s"] for x in cold["gzip"]],
                "cpu_s": [x.get("cpu_s") for x in cold["gzip"]],
                "phases_s": _phases(cold["gzip"]),
            },
            baseline_kind="pip Dockerfile",
        ),
        Row(
            "1. cold build, amd64, zstd layers",
            _sample(cold["zstd"]) if zstd else Sample([]),
            "pip Dockerfile: buildah bud + push (zstd) to an OCI layout",
            zs,
            "<= 0.20x",
            0.2,
            note=bud_note,
            extra={
                "process_s": [x["process_s"] for x in cold["zstd"]],
                "cpu_s": [x.get("cpu_s") for x in cold["zstd"]],
                "phases_s": _phases(cold["zstd"]),
            },
            baseline_kind="pip Dockerfile",
        ),
        Row(
            "2. model-only rebuild, amd64",
            _sample(r["one"]),
            "pip Dockerfile: buildah bud, layer cache (amd64)",
            _bsample(b_model),
            note=f"buildah + push to the layout {_bsample(b_push).cell()}" if b_push else "",
            baseline_kind="pip Dockerfile",
        ),
        Row(
            "2. model-only rebuild, amd64 + arm64",
            _sample(r["multi"]),
            "pip Dockerfile: buildah bud, layer cache (amd64 only)",
            _bsample(b_model),
            "<= 0.6x",
            0.6,
            baseline_kind="pip Dockerfile",
        ),
        Row(
            "3. nothing-changed rebuild, amd64",
            _sample(r["one_same"]),
            "pip Dockerfile: buildah bud, layer cache (amd64)",
            _bsample(b_same),
            "<= 1.0x",
            1.0,
            note="same digest" if same_digest else "digest changed",
            baseline_kind="pip Dockerfile",
        ),
        Row(
            "3. nothing-changed rebuild, amd64 + arm64",
            _sample(r["multi_same"]),
            "pip Dockerfile: buildah bud, layer cache (amd64 only)",
            _bsample(b_same),
            "<= 1.0x",
            1.0,
            baseline_kind="pip Dockerfile",
        ),
        Row(
            "4. multi-arch cold build (amd64 + arm64)",
            _sample(cold["multi"]),
            "ociforge single-arch cold build (amd64)",
            _sample(cold["gzip"]),
            "<= 2.0x",
            2.0,
            note="buildah --platform linux/arm64: "
            + ("built" if arm_ok else f"fails ({arm_said}; no binfmt handler)"),
            baseline_kind="ociforge",
        ),
        Row(
            "4. multi-arch model-only rebuild",
            _sample(r["multi"]),
            "ociforge single-arch model-only rebuild",
            _sample(r["one"]),
            baseline_kind="ociforge",
        ),
    ]
    rows = [row for row in rows if row.baseline is not None]
    rows += uvbuilds.rows(uv, _sample(cold["gzip"]), _sample(cold["zstd"]) if zstd else None, added)
    if uv.cache is not None:
        shutil.rmtree(uv.cache, ignore_errors=True)
    return BuildResults(rows, g.out, m.out, work / "buildah-gzip", variant, model_now, g)


def added_dependency(
    work: Path, bases: Bases, g: ForgeState, ctx_uv: Path, uv, variant: int, runs: int, log
) -> dict:
    """Row 2b, both sides: each run from a hard-linked copy of the caches as they were before
    ``six`` (so ``six`` is new every time), alternating which side goes first; then ociforge's
    image before and after, pushed to a fresh loopback registry (the second push's bytes)."""
    from ociforge.oci.image import walk_manifests
    from ociforge.transports.layout import read_layout
    from ociforge.transports.registry import remote as registry
    from tests.support.registry import RegistryServer

    pins = list(g.last["pins"])
    before = g.last
    ours = []
    after = None
    for j in range(runs):
        for side in ("forge", "uv") if j % 2 == 0 else ("uv", "forge"):
            if side == "uv":
                uvbuilds.added_dependency(work, bases.uv_base, ctx_uv, pins, uv, j)
                log(f"added {uvbuilds.ADDED}: uv Dockerfile {uv.added_bud[-1].seconds:.2f}s")
                continue
            d = work / "forge-added"
            shutil.rmtree(d, ignore_errors=True)
            st = ForgeState(
                uvbuilds.hardlink_copy(g.cache, d / "cache"),
                uvbuilds.hardlink_copy(g.uv, d / "uv"),
                d / "out",
            )
            after = forge(st, AMD64, "gzip", variant, ("--add", uvbuilds.ADDED))
            ours.append(after)
            log(f"added {uvbuilds.ADDED}: ociforge {after['build_s']:.2f}s")
    assert after is not None
    old = {x["digest"] for x in before["layers"]["linux/amd64"]}
    new = [x for x in after["layers"]["linux/amd64"] if x["digest"] not in old]
    layer = sum(x["size"] for x in new if uvbuilds.ADDED in x["what"])
    with RegistryServer(work / "added-registry", mode="http") as reg:
        registry.push(read_layout(g.out, "iris"), reg.ref("bench/iris:before"))
        img = read_layout(work / "forge-added" / "out", "iris")
        pushed = registry.push(img, reg.ref("bench/iris:after")).bytes_uploaded
        pushed += sum(len(raw) for _d, raw in walk_manifests(img))  # all new: blobs + manifests
    shutil.rmtree(work / "forge-added", ignore_errors=True)
    return {
        "ours": _sample(ours),
        "pushed": pushed,
        "layer_bytes": layer,
        "new_layers": ", ".join(f"{x['what']} ({x['size'] / 1024:.1f} KiB)" for x in new),
    }


def _buildah_arm64(work: Path, bases: Bases, ctx: Path) -> tuple[bool, str]:
    """What ``buildah bud --platform linux/arm64`` does on this machine (untimed)."""
    b = Buildah(work / "buildah-arm64")
    try:
        b.pull_base(bases.dockerfile_base, "linux/arm64")
        return b.try_bud(ctx, "localhost/iris-arm64:1", "linux/arm64")
    except (subprocess.SubprocessError, RuntimeError) as e:
        return False, str(e)[-200:]
    finally:
        b.remove()
