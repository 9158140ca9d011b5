"""Push a multi-arch OCI layout to a local registry: ociforge against ``skopeo copy --all``.

Both push the same layout to fresh repositories of the same ``docker-registry`` in the same run,
so the ratio says how ociforge compares on this machine; then both push it again unchanged (what a
CI job re-running does), where ociforge should send 0 blob bytes.

    python benchmarks/push_bench.py [--mib 96] [--platforms 2] [--rounds 3]

Prints a table: seconds per tool, ociforge/skopeo ratio (< 1 is faster), bytes sent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ociforge.oci.blobstore import BlobStore  # noqa: E402
from ociforge.oci.image import ImageIndex, append, make_index, store_source  # noqa: E402
from ociforge.oci.layer import Entry, write_layer  # noqa: E402
from ociforge.oci.platform import Platform  # noqa: E402
from ociforge.transports.layout import read_layout, write_layout  # noqa: E402
from ociforge.transports.registry import remote as registry  # noqa: E402
from tests.support.registry import RegistryServer  # noqa: E402


def build_layout(root: Path, mib: int, platforms: list[str]) -> None:
    """Per platform: three layers (about 70/20/10% of ``mib``) of incompressible model weights."""
    store = BlobStore(root / "work")
    images = []
    for plat in platforms:
        layers = []
        for i, share in enumerate((0.7, 0.2, 0.1)):
            path = root / f"w-{plat.replace('/', '-')}-{i}.bin"
            with open(path, "wb") as f:
                for _ in range(max(1, int(mib * share))):
                    f.write(os.urandom(1 << 20))
            layers.append(
                write_layer([Entry.from_file(f"model/part{i}.bin", path)], store, level=1)
            )
            path.unlink()
        images.append(
            append(None, layers, store_source(store), platform=Platform.parse(plat), store=store)
        )
    write_layout(make_index(images), root / "layout", "v1")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def skopeo(layout: Path, dest: str, tag: str = "v1") -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "-q",
            "--dest-tls-verify=false",
            f"oci:{layout}:{tag}",
            f"docker://{dest}",
        ],
        check=True,
    )


def measure(layout: Path, tag: str, rounds: int, workdir: Path) -> dict:
    """Push ``layout:tag`` with ociforge and with skopeo, fresh then again, ``rounds`` times.

    Returns the seconds of each case per round (``ociforge``, ``skopeo``, ``ociforge again``,
    ``skopeo again``), the blob bytes ociforge sent in the last round (``sent``), and the bytes
    of everything the layout's image references (``total``).
    """
    obj = read_layout(layout, tag)
    times: dict[str, list[float]] = {
        "ociforge": [],
        "skopeo": [],
        "ociforge again": [],
        "skopeo again": [],
    }
    sent = {}
    for r in range(rounds):
        # A fresh registry (new port) per round: skopeo's blob-info cache must not know
        # where the blobs already are, or it would mount instead of pushing.
        with RegistryServer(workdir / f"round{r}", mode="http") as reg:
            order = ("ociforge", "skopeo") if r % 2 == 0 else ("skopeo", "ociforge")
            for what in ("", " again"):
                for tool in order:
                    if tool == "ociforge":
                        t, res = timed(
                            lambda reg=reg: registry.push(obj, reg.ref("bench/ociforge:v1"))
                        )
                        sent["ociforge" + what] = res.bytes_uploaded
                    else:
                        t, _ = timed(
                            lambda reg=reg: skopeo(layout, reg.ref("bench/skopeo:v1"), tag)
                        )
                    times[tool + what].append(t)
    if isinstance(obj, ImageIndex):
        total = sum(d.size for d in obj.index.manifests) + sum(
            d.size for _d, img in obj.images() for d in img.blobs()
        )
    else:
        total = sum(d.size for d in obj.blobs())
    return {"times": times, "sent": sent, "total": total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=96, help="MiB of layers per platform")
    ap.add_argument("--platforms", type=int, default=2, choices=(1, 2, 3))
    ap.add_argument("--rounds", type=int, default=3, help="repetitions (best time is reported)")
    args = ap.parse_args()
    plats = ["linux/amd64", "linux/arm64", "linux/ppc64le"][: args.platforms]
    with tempfile.TemporaryDirectory(prefix="ociforge-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["OCIFORGE_CACHE"] = str(tmp / "cache")
        build_layout(tmp, args.mib, plats)
        got = measure(tmp / "layout", "v1", args.rounds, tmp)
        best, sent, total = got["times"], got["sent"], got["total"]
        rows = []
        for what in ("", " again"):
            o, s = min(best["ociforge" + what]), min(best["skopeo" + what])
            rows.append((f"push{what or ' (fresh repo)'}", o, s, o / s, sent["ociforge" + what]))
    print(f"\n{len(plats)} platforms, {total / (1 << 20):.1f} MiB of blobs, best of {args.rounds}")
    print(f"{'case':<22}{'ociforge s':>12}{'skopeo s':>12}{'ratio':>8}{'ociforge sent':>16}")
    for case, o, s, ratio, nbytes in rows:
        print(f"{case:<22}{o:>12.3f}{s:>12.3f}{ratio:>8.2f}{nbytes / (1 << 20):>13.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
