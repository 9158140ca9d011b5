"""Layer writing throughput: ociforge against ``tar | zstd/gzip | sha256sum`` on the same tree.

    python -m benchmarks.layer_bench [--tree DIR] [--runs N]

The default tree is the installed numpy, scipy and scikit-learn packages (a realistic few hundred
MB of site-packages). Each row is timed in the same run as its baseline, and the ratio printed;
peak memory is the child process's maximum RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import table

WRITER = r"""
import sys, time
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.layer import entries_from_tree, write_layer
t0 = time.perf_counter()
layer = write_layer(entries_from_tree(sys.argv[1], "site-packages"), BlobStore(sys.argv[2]), sys.argv[3], threads=int(sys.argv[4]))
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(time.perf_counter() - t0, hwm, layer.size)
"""


def default_tree() -> Path:
    """A tree of numpy, scipy and sklearn copied side by side (hardlinks would not be realistic)."""
    import numpy
    import scipy
    import sklearn

    dest = Path(tempfile.mkdtemp(prefix="ociforge-bench-tree-"))
    for mod in (numpy, scipy, sklearn):
        src = Path(mod.__file__).parent
        shutil.copytree(src, dest / src.name, symlinks=True)
    return dest


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def ours(tree: Path, compression: str, threads: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as store:
        out = subprocess.run(
            [sys.executable, "-c", WRITER, str(tree), store, compression, str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
    t, rss, size = out.stdout.split()
    return float(t), int(rss), int(size)


def pipeline(tree: Path, compressor: str) -> tuple[float, int]:
    cmd = f"tar -C {tree} -cf - . | {compressor} | sha256sum"
    t0 = time.perf_counter()
    out = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{cmd} >/dev/null; "], capture_output=True
    )
    elapsed = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(out.stderr)
    return elapsed, 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    tree = args.tree or default_tree()
    size = tree_bytes(tree)
    subprocess.run(
        ["tar", "-C", str(tree), "-cf", "/dev/null", "."], check=True
    )  # warm the page cache
    rows = []
    cases = [
        ("zstd", "zstd -3 -T0 -q", -1),
        ("gzip", "gzip -6", 0),
    ]
    for comp, shell_comp, threads in cases:
        mine, base, peaks = [], [], []
        for _ in range(args.runs):
            t, rss, _size = ours(tree, comp, threads)
            mine.append(t)
            peaks.append(rss)
            base.append(pipeline(tree, shell_comp)[0])
        mine.sort()
        base.sort()
        m, b = mine[len(mine) // 2], base[len(base) // 2]
        rows.append(
            {
                "case": f"layer {comp}",
                "ociforge_s": f"{m:.2f} ({mine[0]:.2f}-{mine[-1]:.2f})",
                "baseline": f"tar \\| {shell_comp} \\| sha256sum",
                "baseline_s": f"{b:.2f} ({base[0]:.2f}-{base[-1]:.2f})",
                "ratio": f"{m / b:.2f}x",
                "MB/s": f"{size / m / 1e6:.0f}",
                "peak_MiB": f"{max(peaks) / 1024:.0f}",
            }
        )
    if args.tree is None:
        shutil.rmtree(tree, ignore_errors=True)
    if args.json:
        print(json.dumps({"tree_bytes": size, "rows": rows}, indent=2))
    else:
        print(
            f"tree: {size / 1e6:.0f} MB, {os.cpu_count()} cores, median of {args.runs} runs (min-max)"
        )
        print(
            table(
                rows,
                [
                    ("case", "case"),
                    ("ociforge_s", "ociforge s"),
                    ("baseline", "baseline"),
                    ("baseline_s", "baseline s"),
                    ("ratio", "ratio"),
                    ("MB/s", "ociforge MB/s"),
                    ("peak_MiB", "ociforge peak MiB"),
                ],
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
