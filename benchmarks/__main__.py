"""One command prints the performance table: ociforge against the Dockerfile way (buildah, with
pip and with uv), the tools users would pick instead (skopeo, a bare Flask app, MLServer) and the
machine's limit (tar | zstd/gzip).

    python -m benchmarks [--quick] [--json] [--out FILE.json] [--runs N] [--keep] [--big]
    benchmarks/run [same options]

Everything the table needs is installed or built by the run (Debian packages when missing, the
ociforge base and the Dockerfile base, once per machine under ~/.cache/ociforge-bench); every
build row starts from empty wheel, layer and uv caches. All ratios are ociforge / baseline from
the same run: absolute times drift on a shared machine, ratios in one run hold. See
docs/benchmarks.md for what each row measures and why the baselines are fair.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import (
    bases,
    builds,
    freshrunner,
    images,
    layerwrite,
    machine,
    mlserver_bench,
    prereqs,
    protocols,
    push,
    startup,
)
from .imagerun import Rootfs
from .stats import Row, markdown

FULL = {
    "runs": 3, "layer_runs": 3, "push_rounds": 3, "start_runs": 5, "serve_s": 2.0,
    "serve_bursts": 10, "zstd_build": True, "layer_tree": "all",
}  # fmt: skip
# --quick: one run of each, no zstd cold build, layer writing over numpy + scikit-learn only
QUICK = {
    "runs": 1, "layer_runs": 1, "push_rounds": 1, "start_runs": 3, "serve_s": 1.5,
    "serve_bursts": 4, "zstd_build": False, "layer_tree": "numpy,sklearn",
}  # fmt: skip


class Log:
    """Progress on stderr with the time since start: the table alone goes to stdout."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def measure(work: Path, opts: dict, log: Log) -> tuple[list[Row], dict]:
    prereqs.ensure(log)
    log("bases (built once per machine)")
    b = bases.ensure()
    info = {"dockerfile_base_pip": b.pip_version}

    log("build rows (1-4)")
    built = builds.run(work, b, opts["runs"], log, zstd=opts["zstd_build"])
    rows = list(built.rows)
    log("fresh-runner rebuild from the registry cache (2c)")
    cold_multi = next(r.ours for r in built.rows if r.case.startswith("4. multi-arch cold"))
    rows += freshrunner.rows(work, work / "forge-multi" / "cache", cold_multi, opts["runs"], log)

    log("image sizes (7)")
    ours_img = images.open_image(built.gzip_image, "iris")
    theirs_img = images.open_image(built.dockerfile_image, "latest")
    size_rows = images.rows(ours_img, theirs_img)

    log("unpacking both images")
    ours = Rootfs(ours_img, work / "rootfs-ociforge")
    theirs = Rootfs(theirs_img, work / "rootfs-dockerfile")

    log("cold start (8)")
    start_rows = startup.cold_start(ours, theirs, opts["start_runs"])
    log("serving (9)")
    serve_rows = startup.serving(
        ours, opts["serve_s"], workers=ours_workers(), bursts=opts["serve_bursts"]
    )

    log("layer writing (5)")
    tree = layerwrite.tree(ours.path / "opt" / "ociforge" / "site-packages", opts["layer_tree"])
    layer_rows = layerwrite.rows(tree, opts["layer_runs"])
    log("push (6)")
    push_rows = push.rows(built.multi_image, "iris", opts["push_rounds"], work / "push")

    log("MLServer peer (13): the example image with grpc=True")
    st = builds.ForgeState(built.state.cache, built.state.uv, work / "forge-grpc")
    rep = builds.forge(st, builds.AMD64, "gzip", built.model_variant, ("--grpc",))
    files = builds.model_files_from_layout(st.out, builds.model_layer(rep))
    grpc_root = Rootfs(images.open_image(st.out, "iris"), work / "rootfs-grpc")
    peer_rows = mlserver_bench.run(
        grpc_root, files, work / "mlserver", opts["start_runs"], opts["serve_s"],
        opts["serve_bursts"], log,
    )  # fmt: skip

    proto_rows = protocols.rows(opts["runs"] == 1, log)

    rows += layer_rows + push_rows + size_rows + start_rows + serve_rows + peer_rows + proto_rows
    if opts.get("big"):
        from . import big_image

        log("big CUDA image (14, opt-in)")
        rows += big_image.run(work / "big", b, log)
    if opts.get("weights_gib"):
        from . import weights_bench

        log(f"weights modelcar, {opts['weights_gib']:g} GiB (10, opt-in)")
        rows += weights_bench.rows(work / "weights", opts["weights_gib"], 1, log)
    return sorted(rows, key=row_number), info


def row_number(row) -> tuple[int, str]:
    """Sort key: the case's number ("2b." after "2.")."""
    num = row.case.split(".")[0]
    digits = "".join(c for c in num if c.isdigit())
    return int(digits), num[len(digits) :]


def ours_workers() -> int:
    """The runtime's default worker count (its CPUs), used for both servers."""
    from ociforge_runtime.config import available_cpus

    return available_cpus()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="one run of each, every row but the big image (about 6 minutes)",
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--runs", type=int, help="build runs (default 3, --quick 1)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (images, caches)")
    ap.add_argument(
        "--big",
        action="store_true",
        help="also row 14: torch with CUDA for amd64 + arm64 (downloads ~10 GB, needs ~35 GB disk)",
    )
    ap.add_argument(
        "--weights",
        type=float,
        metavar="GIB",
        help="also row 10: a GIB-sized incompressible weight file as a modelcar (e.g. 4)",
    )
    args = ap.parse_args(argv)
    opts = dict(QUICK if args.quick else FULL)
    if args.runs:
        opts["runs"] = args.runs
    if args.weights:
        opts["weights_gib"] = args.weights
    opts["big"] = args.big
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))

    log = Log()
    work = Path(tempfile.mkdtemp(prefix="ociforge-bench-"))
    try:
        rows, info = measure(work, opts, log)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - log.t0
    info |= machine.describe()
    doc = {
        "machine": info,
        "mode": "quick" if args.quick else "full",
        "settings": opts,
        "elapsed_s": round(elapsed),
        "rows": [r.to_json() for r in rows],
    }
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        runs = f"median of {opts['runs']} runs (min–max)" if opts["runs"] > 1 else "one run"
        print(f"Measured {machine.line(info)}; {doc['mode']} mode, {runs}, {elapsed:.0f} s.\n")
        print(markdown(rows))
        met = [r.met for r in rows if r.met is not None]
        print(f"\n{sum(met)} of {len(met)} targets met; ratio = ociforge / baseline.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
