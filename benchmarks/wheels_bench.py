"""Wheels for the scikit-learn set: ociforge (resolve + download + layers) against
``pip install --target`` + ``tar | gzip``, cold and warm, amd64 and arm64, in the same run.

    python benchmarks/wheels_bench.py

Prints a table of seconds and ratios against the pip baseline measured in this run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ociforge.oci.blobstore import BlobStore
from ociforge.python.install import wheel_layers
from ociforge.python.resolve import resolve
from ociforge.python.target import debian_target
from ociforge.python.wheelcache import WheelCache

REQ = ["scikit-learn==1.5.2"]


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def pip_baseline(tmp: Path, cache: Path) -> float:
    target = tmp / "pip-target"

    def go():
        env = {**os.environ, "PIP_CACHE_DIR": str(cache)}
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), *REQ],
            check=True,
            env=env,
            capture_output=True,
        )
        subprocess.run(
            f"tar -C {target} -cf - . | gzip -6 > {tmp / 'pip.tar.gz'}", shell=True, check=True
        )

    return timed(go)


def ociforge_build(tmp: Path, platform: str, cache: WheelCache, tag: str) -> float:
    t = debian_target(platform)

    def go():
        locks = resolve(REQ, [t])
        wheel_layers(locks[t], t, BlobStore(tmp / f"store-{tag}"), cache=cache)

    return timed(go)


def main() -> None:
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        rows = []
        base_cold = pip_baseline(tmp / "p1", tmp / "pipcache")
        rows.append(("pip --target + tar|gzip (amd64, cold)", base_cold))
        cache = WheelCache(tmp / "wheels")
        rows.append(("ociforge amd64 cold", ociforge_build(tmp, "linux/amd64", cache, "a1")))
        rows.append(("ociforge amd64 warm cache", ociforge_build(tmp, "linux/amd64", cache, "a2")))
        rows.append(("ociforge arm64 cold", ociforge_build(tmp, "linux/arm64", cache, "b1")))
        rows.append(("ociforge arm64 warm cache", ociforge_build(tmp, "linux/arm64", cache, "b2")))
        base_warm = pip_baseline(tmp / "p2", tmp / "pipcache")
        rows.append(("pip --target + tar|gzip (amd64, warm)", base_warm))
        print(f"{'what':42} {'seconds':>8} {'vs pip cold':>12}")
        for name, s in rows:
            print(f"{name:42} {s:8.1f} {s / base_cold:11.2f}x")
        amd = rows[2][1]
        arm = rows[4][1]
        print(f"{'arm64 / amd64 (warm)':42} {arm / amd:8.2f}")


if __name__ == "__main__":
    main()
