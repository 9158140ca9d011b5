"""Row 10 (opt-in): model weights as a KServe modelcar, at the speed of the disk.

    python -m benchmarks.weights_bench [--gib 4] [--runs 1] [--json]
    python -m benchmarks --weights 4            # the same rows in the full table

An incompressible file (``/dev/urandom``, as safetensors/GGUF weights are to deflate) is written
by ``ociforge weights`` as a two-platform modelcar into an OCI layout (its layer uncompressed,
written and hashed in one pass), against ``tar -c FILE | sha256sum`` of the same file, page cache
warm for both; peak memory is the writing process's (VmHWM). Then the modelcar is pushed to a
local ``docker-registry`` (the layer streamed from the file itself) against ``skopeo copy --all``
of the written layout to another repository, and pushed again unchanged: no blob bytes may go.
Every ociforge run hashes anew (``OCIFORGE_WEIGHTS_REHASH=1``: no remembered digest) except the
unchanged re-push, which runs as a user's would (the digest remembered by the file's identity);
its note gives the re-push hashing anew too.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.stats import Row, Sample, markdown  # noqa: E402

WRITER = r"""
import json, sys, time
import ociforge
t0 = time.perf_counter()
res = ociforge.weights([sys.argv[1]], to=sys.argv[2])
seconds = time.perf_counter() - t0
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"seconds": seconds, "peak_kib": int(hwm), "sent": res.bytes_uploaded,
                  "digest": res.digest, "layers": [d.media_type for d in res.layers]}))
"""

PEAK_LIMIT_MIB = 200


def _ours(folder: Path, dest: str, rehash: bool = True) -> dict:
    env = {**os.environ, "OCIFORGE_WEIGHTS_REHASH": "1" if rehash else "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", WRITER, str(folder), dest],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"ociforge weights failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed_shell(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def make_weights(folder: Path, gib: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    size = int(gib * (1 << 30))
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 64 << 20)
                f.write(os.urandom(n))
                left -= n
    return path


def rows(workdir: Path, gib: float = 4, runs: int = 1, log=print) -> list[Row]:
    from tests.support.registry import RegistryServer

    folder = workdir / "weights"
    path = make_weights(folder, gib)
    size = path.stat().st_size
    subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)  # warm cache
    baseline_cmd = f"tar -cf - -C {folder} {path.name} | sha256sum"
    mine, peaks, base = [], [], []
    for i in range(runs):
        layout = workdir / f"layout{i}"
        shutil.rmtree(layout, ignore_errors=True)
        base.append(_timed_shell(baseline_cmd))
        got = _ours(folder, f"oci:{layout}:w")
        mine.append(got["seconds"])
        peaks.append(got["peak_kib"])
        log(
            f"weights write {i + 1}/{runs}: ours {got['seconds']:.2f} s, tar|sha256sum {base[-1]:.2f} s"
        )
        if i < runs - 1:
            shutil.rmtree(layout, ignore_errors=True)
    peak_mib = max(peaks) / 1024
    label = f"{gib:g} GiB" if gib >= 1 else f"{size >> 20} MiB"
    out = [
        Row(
            f"10. weights modelcar, {label} incompressible, amd64 + arm64, to an OCI layout",
            Sample(mine, "s", max(peaks)),
            "tar -c FILE | sha256sum",
            Sample(base, "s"),
            f"<= 1.3x, peak < {PEAK_LIMIT_MIB} MiB",
            1.3 if peak_mib < PEAK_LIMIT_MIB else 0.0,
            note=f"{size / min(mine) / 1e6:.0f} MB/s; layer {got['layers'][-1].rsplit('.', 1)[-1]}",
        )
    ]
    layout = workdir / f"layout{runs - 1}"
    shutil.rmtree(workdir / "registry", ignore_errors=True)  # a registry that has no blob yet
    with RegistryServer(workdir / "registry", mode="http") as reg:
        first = _ours(folder, reg.ref("bench/weights:1"))
        skopeo = _timed_shell(
            f"skopeo copy -q --all --dest-tls-verify=false oci:{layout}:w docker://{reg.ref('bench/skopeo:1')}"
        )
        again = _ours(folder, reg.ref("bench/weights:1"), rehash=False)
        again_hashed = _ours(folder, reg.ref("bench/weights:1"))
        skopeo_again = _timed_shell(
            f"skopeo copy -q --all --dest-tls-verify=false oci:{layout}:w docker://{reg.ref('bench/skopeo:1')}"
        )
    log(f"weights push: ours {first['seconds']:.2f} s ({first['sent']} B), again {again['sent']} B")
    out += [
        Row(
            f"10. weights push, {label} modelcar",
            Sample([first["seconds"]], "s", first["peak_kib"]),
            "skopeo copy --all (the written layout)",
            Sample([skopeo], "s"),
            note=f"{first['sent'] / 1e6:.0f} MB sent, streamed from the file (hashed anew)",
        ),
        Row(
            "10. weights re-push unchanged",
            Sample([again["seconds"]], "s", again["peak_kib"]),
            "skopeo copy --all again",
            Sample([skopeo_again], "s"),
            "0 bytes",
            float("inf") if again["sent"] == again_hashed["sent"] == 0 else -1.0,
            note=f"{again['sent']} blob bytes sent (digest remembered); hashing the file anew: "
            f"{again_hashed['seconds']:.1f} s, {again_hashed['sent']} bytes sent",
            extra={"bytes_sent": again["sent"], "rehashed": again_hashed},
        ),
    ]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.weights_bench", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--gib", type=float, default=4.0, help="size of the weight file (default 4)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--workdir", type=Path, help="where the file and layouts go (default: a temp dir)"
    )
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ociforge-weights-bench-"))
    try:
        got = rows(work, args.gib, args.runs, log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps([r.to_json() for r in got], indent=2, default=str))
    else:
        print(markdown(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
