"""Row 5: layer writing against the machine's limit for the same bytes.

The files are the example image's own site-packages (its wheel layers, unpacked), so the row
speaks of the bytes a build really writes. ociforge writes one layer of them into a blob store
(sha256 included); the baselines are ``tar -c | zstd -3 -T0 | sha256sum`` and
``tar -c | gzip -6 | sha256sum`` over the same folder, page cache warm for all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .layer_bench import ours, pipeline, tree_bytes
from .stats import Row, Sample

CASES = [
    ("zstd", "zstd -3 -T0 -q", -1, "<= 1.3x", 1.3),
    ("gzip", "gzip -6", 0, "<= 1.0x", 1.0),
]


def tree(site_packages: Path, which: str) -> Path:
    """``site_packages`` itself (``"all"``), or a folder of links to some of its packages
    (``"numpy,sklearn"``: the smaller tree of ``--quick``)."""
    if which == "all":
        return site_packages
    d = site_packages.parent / "bench-tree"
    d.mkdir(exist_ok=True)
    for name in which.split(","):
        link = d / name
        if not link.exists():
            shutil.copytree(site_packages / name, link, symlinks=True, copy_function=os.link)
    return d


def rows(tree: Path, runs: int) -> list[Row]:
    size = tree_bytes(tree)
    subprocess.run(["tar", "-C", str(tree), "-cf", "/dev/null", "."], check=True)  # warm cache
    out = []
    for comp, shell, threads, target, limit in CASES:
        mine, peaks, base = [], [], []
        for _ in range(runs):
            t, rss, _size = ours(tree, comp, threads)
            mine.append(t)
            peaks.append(rss)
            base.append(pipeline(tree, shell)[0])
        out.append(
            Row(
                f"5. layer writing, {comp}, {size / 1e6:.0f} MB",
                Sample(mine, "s", max(peaks)),
                f"tar -c | {shell} | sha256sum",
                Sample(base, "s"),
                target,
                limit,
                note=f"{size / min(mine) / 1e6:.0f} MB/s",
                baseline_kind="tool",
            )
        )
    return out
