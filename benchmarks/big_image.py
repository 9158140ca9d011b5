"""Row 14 (opt-in, ``--big``): a big CUDA image. ``torch`` for linux/amd64 and linux/arm64, the
CUDA variant the resolution picks (about 3 GB of wheels per platform), built by ociforge into an
OCI layout with zstd layers from empty caches; against the uv Dockerfile (``UV_DOCKERFILE``,
requirements pinned to the same versions) built by buildah for linux/amd64 alone (buildah cannot
run arm64 ``RUN`` steps here) and pushed to an OCI layout with zstd.

Measured: wall time, the build process's peak memory, bytes written to disk (every file the build
left: wheels, cache blobs, the layout; hard links to the seed cache not counted), a model-only
rebuild with the caches warm, and where the time goes: the same amd64 wheels inflated, hashed and
compressed by single stages in one thread (CPU seconds per stage, the build runs them on both
cores at once). Downloads about 6.5 GB for ociforge and 3 GB for buildah, and needs about 35 GB of
free disk: the run checks first and removes everything it wrote.

    python -m benchmarks.big_image [--keep]      # alone; benchmarks/run --big adds it to the table
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

from . import builds
from .bases import Bases
from .dockerfile import UV_BASE_NAME, Buildah, model_files_from_layout, write_context
from .stats import Row, Sample
from .uvbuilds import hardlink_copy

NEED_GB = 35
CHUNK = 1 << 20


def free_gb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1e9


def written_bytes(root: Path, seed_inodes: set[int]) -> int:
    """Bytes of the files under ``root`` that the build wrote (each inode once, the seed's not)."""
    seen, total = set(seed_inodes), 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def inodes(root: Path) -> set[int]:
    return {os.lstat(os.path.join(d, f)).st_ino for d, _s, fs in os.walk(root) for f in fs}


def stages(wheels: list[Path]) -> dict:
    """CPU seconds of each pass over these wheels' bytes, alone, in one thread: inflate (zip
    members, CRC-checked as zipfile does), sha256 of the inflated bytes (a layer's diff_id),
    zstd level 3 of them, sha256 of the compressed bytes (the blob's digest)."""
    import zstandard

    out = {"inflate_s": 0.0, "hash_tar_s": 0.0, "zstd_s": 0.0, "hash_blob_s": 0.0}
    raw_n = comp_n = 0
    clock = time.process_time
    for w in wheels:
        with zipfile.ZipFile(w) as zf:
            for info in zf.infolist():
                tar_hash, blob_hash = hashlib.sha256(), hashlib.sha256()
                comp = zstandard.ZstdCompressor(level=3).compressobj()
                with zf.open(info) as m:
                    while True:
                        t0 = clock()
                        b = m.read(CHUNK)
                        t1 = clock()
                        if not b:
                            break
                        tar_hash.update(b)
                        t2 = clock()
                        z = comp.compress(b)
                        t3 = clock()
                        blob_hash.update(z)
                        t4 = clock()
                        raw_n += len(b)
                        comp_n += len(z)
                        out["inflate_s"] += t1 - t0
                        out["hash_tar_s"] += t2 - t1
                        out["zstd_s"] += t3 - t2
                        out["hash_blob_s"] += t4 - t3
                t0 = clock()
                z = comp.flush()
                out["zstd_s"] += clock() - t0
                blob_hash.update(z)
                comp_n += len(z)
    return out | {"inflated_bytes": raw_n, "zstd_bytes": comp_n}


def layout_copy_s(layout: Path, dest: Path) -> float:
    """Seconds to write the built index into a fresh layout: what a build's last step does with
    the layers it wrote into its cache (each read, hashed and written again)."""
    from ociforge.transports.layout import read_layout, write_layout

    t0 = time.perf_counter()
    write_layout(read_layout(layout, "big"), dest, "big")
    took = time.perf_counter() - t0
    shutil.rmtree(dest, ignore_errors=True)
    return took


def _wheels_for(cache: Path, pins: list[str]) -> list[Path]:
    """The amd64 wheels the build downloaded (from its wheel cache), for the stage breakdown."""
    names = {p.split("==")[0].replace("-", "_").lower() for p in pins}
    found = [
        p
        for p in cache.rglob("*.whl")
        if p.name.split("-")[0].lower() in names
        and ("x86_64" in p.name or p.name.endswith("-any.whl"))
    ]
    return sorted(found)


def run(work: Path, bases: Bases, log) -> list[Row]:
    work.mkdir(parents=True, exist_ok=True)
    have = free_gb(work)
    if have < NEED_GB:
        raise RuntimeError(f"--big needs about {NEED_GB} GB free under {work}, {have:.0f} GB is")
    seed_inodes = inodes(bases.seed)
    try:
        return _measure(work, bases, seed_inodes, log)
    finally:
        for name in (
            "forge-big", "forge-big-again", "buildah-big", "big-context", "buildah-big-zstd",
            "big-cache",
        ):  # fmt: skip
            shutil.rmtree(work / name, ignore_errors=True)


def _measure(work: Path, bases: Bases, seed_inodes: set[int], log) -> list[Row]:
    both = ["linux/amd64", "linux/arm64"]
    st = builds.fresh_state(work, "forge-big", bases)
    log("big image: ociforge cold build, torch, amd64 + arm64, zstd (14)")
    cold = forge_big(st, both, 0)
    written = written_bytes(st.cache.parent, seed_inodes)
    log(f"big image: ociforge {cold['build_s']:.1f}s, peak {cold['peak_kib'] / 1024:.0f} MiB")
    rebuild = forge_big(st, both, 1)
    log(f"big image: model-only rebuild {rebuild['build_s']:.2f}s")
    # where the time goes: the cold build again with the wheels already downloaded (and uv's
    # resolution cached), then also with the library check's ELF facts cached
    split = {}
    for name, keep in (("no_download", ("wheels",)), ("no_download_no_elf", ("wheels", "elf"))):
        again = builds.fresh_state(work, "forge-big-again", bases)
        shutil.rmtree(again.uv)
        hardlink_copy(st.uv, again.uv)
        for part in keep:
            if (st.cache / part).is_dir():
                hardlink_copy(st.cache / part, again.cache / part)
        split[name] = forge_big(again, both, 0)["build_s"]
        shutil.rmtree(again.cache.parent, ignore_errors=True)
        log(f"big image: cold build, {name.replace('_', ' ')}: {split[name]:.1f}s")
    copy_s = layout_copy_s(st.out, work / "big-layout-copy")
    log(f"big image: the built index copied into a fresh layout (hashed, written): {copy_s:.1f}s")
    pins = cold["pins"]
    wheels = _wheels_for(st.cache, pins)
    log(f"big image: stage breakdown over {len(wheels)} amd64 wheels")
    where = stages(wheels)
    amd = cold["layers"]["linux/amd64"]
    files = model_files_from_layout(st.out, next(x["digest"] for x in amd if x["what"] == "model"))
    shutil.rmtree(st.cache.parent, ignore_errors=True)  # disk for buildah's side

    ctx = write_context(work / "big-context", pins, files, "uv")
    b = Buildah(work / "buildah-big", work / "big-cache")
    try:
        b.pull_base(bases.uv_base, name=UV_BASE_NAME)
        log("big image: uv Dockerfile, buildah bud (amd64, empty uv cache)")
        bud = b.bud(ctx, "localhost/big:1")
        push = b.push("localhost/big:1", work / "buildah-big-zstd", "zstd")
        log(f"big image: buildah bud {bud.seconds:.1f}s + push zstd {push.seconds:.1f}s")
    finally:
        b.remove()
    theirs = Sample([bud.seconds + push.seconds], "s", max(bud.peak_kib, push.peak_kib))
    stored = sum(x["size"] for p in cold["layers"].values() for x in p) / 1e9
    lib = cold.get("library_warnings", [])
    extra = {
        "stages_cpu_s": where,
        "cold_without_download_s": split["no_download"],
        "layout_copy_s": copy_s,
        "cold_without_download_and_library_facts_s": split["no_download_no_elf"],
        "bytes_written": written,
        "image_bytes": stored,
        "bud_s": bud.seconds,
        "push_s": push.seconds,
        "library_check": cold.get("library_check", ""),
        "library_warnings": lib,
        "pins": pins,
    }
    dl = cold["build_s"] - split["no_download"]
    elf = split["no_download"] - split["no_download_no_elf"]
    stage_note = (
        (f"download ~{dl:.0f}s, " if dl > 0 else "download not separable from the noise, ")
        + f"library check's ELF reading ~{elf:.0f}s, the rest "
        f"{split['no_download_no_elf']:.0f}s (of which the copy into the layout ~{copy_s:.0f}s); "
        f"1-thread CPU over the amd64 wheels ({where['inflated_bytes'] / 1e9:.1f} GB inflated): "
        f"inflate {where['inflate_s']:.0f}s, sha256 {where['hash_tar_s']:.0f}s + "
        f"{where['hash_blob_s']:.0f}s, zstd-3 {where['zstd_s']:.0f}s"
    )
    return [
        Row(
            "14. big CUDA image (torch), amd64 + arm64, zstd",
            Sample([cold["build_s"]], "s", cold["peak_kib"]),
            "uv Dockerfile, amd64 only: buildah bud (empty uv cache) + push (zstd)",
            theirs,
            "<= 0.5x, peak <= 400 MiB",
            0.5,
            note=f"{stored:.2f} GB of layers, {written / 1e9:.1f} GB written to disk; "
            f"bud alone {bud.seconds:.0f}s; library check: {cold.get('library_check', '?')}",
            baseline_kind="uv Dockerfile",
            extra=extra,
        ),
        Row(
            "14. big CUDA image, model-only rebuild",
            Sample([rebuild["build_s"]], "s", rebuild["peak_kib"]),
            "1 s",
            Sample([1.0], "s"),
            "< 1 s",
            1.0,
            note=stage_note,
            baseline_kind="bound",
        ),
    ]


def forge_big(state: builds.ForgeState, platforms: list[str], variant: int) -> dict:
    """``forge_build --torch`` in its own process; the report, with what the library check said
    (its warnings on stderr)."""
    import json
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "benchmarks.forge_build",
        "--torch",
        "--to",
        f"oci:{state.out}:big",
    ]
    cmd += [a for p in platforms for a in ("--platform", p)]
    cmd += ["--compression", "zstd", "--variant", str(variant)]
    proc = subprocess.run(
        cmd, cwd=builds.ROOT, env=builds.pypi_env(state), capture_output=True, text=True
    )
    if proc.returncode:
        said = proc.stderr[-3000:]
        if "librar" in said:
            return {"library_check": "failed: " + said[-500:], "build_s": float("nan")}
        raise RuntimeError(f"big ociforge build failed: {said}")
    report = json.loads(proc.stdout)
    warnings = [ln for ln in proc.stderr.splitlines() if "needs lib" in ln]
    report["library_warnings"] = warnings
    report["library_check"] = (
        f"passed, {len(warnings)} warnings (libraries no module imported at start needs)"
        if warnings
        else "passed, no warnings"
    )
    return report


def main() -> int:
    import argparse
    import tempfile

    from . import bases as bases_mod
    from . import prereqs
    from .__main__ import Log
    from .stats import markdown

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(builds.ROOT / "runtimes"))
    log = Log()
    prereqs.ensure(log)
    work = Path(tempfile.mkdtemp(prefix="ociforge-bench-big-"))
    try:
        rows = run(work, bases_mod.ensure(), log)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(rows))
    import json

    print(json.dumps([r.to_json() for r in rows], indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
