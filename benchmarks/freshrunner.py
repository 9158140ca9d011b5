"""Row 2c: a model-only rebuild on a fresh CI runner, from the registry cache (issue #21).

A CI job usually starts with an empty cache. With the destination's repository as the registry
cache (:mod:`ociforge.cache`), a fresh runner finds there the memo entries the previous job left
(base, wheel layers, bytecode, runtime, checks) and downloads no wheel and no ``.deb``: only the
model layer is made and pushed.

Builds of the example for amd64 + arm64 go to a loopback ``docker-registry`` that has seen
nothing, each in a process of its own, all from the same lock (as a CI job would commit one;
resolving is not what is measured here):

- the previous job, from a copy of row 4's warm cache: pushes the image, leaves the entries;
- a warm local rebuild (the same cache, the model refitted), as on a developer's machine;
- the fresh runner: empty ``OCIFORGE_CACHE``, ``HOME`` and ``XDG_CACHE_HOME``, the model
  refitted again; then the warm cache builds that same model, and the two digests must agree.

The row's baseline is row 4's cold amd64 + arm64 build: what a runner without a cache pays.

    python -m benchmarks.freshrunner --child --to REF --lock FILE [--variant N]
    python -m benchmarks.freshrunner --child --to '' --lock FILE --write-lock
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .builds import BOTH, ROOT, ForgeState, pypi_env
from .stats import Row, Sample
from .uvbuilds import hardlink_copy

VARIANT = 300  # a model no other row builds, so the previous job's model layer is new too


def _write_lock(lock: Path) -> None:
    """The lock a CI job would commit: the model's ``auto`` requirements and the runtime's,
    resolved for both platforms on the default base (untimed)."""
    from ociforge.builder.plan import resolve_options, runtime_requirements
    from ociforge.model.imports import auto_requirements
    from ociforge.model.package import package_model
    from ociforge.python.lock import write_lockfile
    from ociforge.python.resolve import resolve
    from ociforge.python.target import Target

    from .forge_build import make_model

    pkl = package_model(make_model(0), None, {"name": "iris", "version": "1.0.0"}, {})["model.pkl"]
    reqs = auto_requirements(pkl)[0] + runtime_requirements()
    targets = [Target.make(p, "3.11", "glibc 2.36", "cpu") for p in BOTH]
    write_lockfile(lock, list(resolve(reqs, targets, resolve_options()).values()))


def _child(to: str, lock: Path, variant: int) -> dict:
    """One build in this process (``--child``): the report the parent reads from stdout."""
    import ociforge
    from ociforge.examples import iris

    from .forge_build import make_model, peak_kib

    model = make_model(variant)
    t0 = time.perf_counter()
    result = ociforge.build(
        model,
        platforms=BOTH,
        lock=lock,
        to=to,
        name="iris",
        version="1.0.0",
        metadata=iris.METADATA,
    )
    build_s = time.perf_counter() - t0
    return {"build_s": build_s, "peak_kib": peak_kib(), "digest": result.digest}


def _build(env: dict, to: str, lock: Path, variant: int = 0, write_lock: bool = False) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.freshrunner", "--child", "--to", to]
    cmd += ["--lock", str(lock), "--variant", str(variant)]
    cmd += ["--write-lock"] if write_lock else []
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"ociforge build failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _fresh_env(base_env: dict, home: Path) -> dict:
    """An empty runner: no ociforge cache, no HOME, no XDG cache (no pip or uv cache either)."""
    from tests.support.freshrunner import fresh_runner_env

    shutil.rmtree(home, ignore_errors=True)
    return base_env | fresh_runner_env(home)


def rows(work: Path, warm_cache: Path, cold: Sample, runs: int, log) -> list[Row]:
    """Row 2c. ``warm_cache``: the cache of row 4's amd64 + arm64 builds (its base, wheels and
    layers), copied for each run; ``cold``: row 4's cold amd64 + arm64 builds, the baseline."""
    from tests.support.registry import RegistryServer

    lock = work / "fresh.lock"
    state = ForgeState(hardlink_copy(warm_cache, work / "fresh-warm" / "cache"), work / "uv", work)
    _build(pypi_env(state), "", lock, write_lock=True)
    warm, fresh, same = [], [], []
    for j in range(runs):
        v = VARIANT + 10 * j
        shutil.rmtree(work / "fresh-warm", ignore_errors=True)
        state.cache = hardlink_copy(warm_cache, work / "fresh-warm" / "cache")
        warm_env = pypi_env(state)
        with RegistryServer(work / f"fresh-registry-{j}", mode="http") as reg:
            to = reg.ref("ci/iris:latest")
            _build(warm_env, to, lock, v)  # the previous job: pushes the image, leaves entries
            warm.append(_build(warm_env, to, lock, v + 1))
            fresh.append(_build(_fresh_env(warm_env, work / "fresh-runner"), to, lock, v + 2))
            again = _build(warm_env, to, lock, v + 2)  # the same model, from the warm cache
        shutil.rmtree(work / f"fresh-registry-{j}", ignore_errors=True)
        same.append(fresh[-1]["digest"] == again["digest"])
        log(
            f"fresh runner {j}: {fresh[-1]['build_s']:.2f}s (warm local "
            f"{warm[-1]['build_s']:.2f}s)"
            f"{'' if same[-1] else ' (digest differs from the warm rebuild!)'}"
        )
    for d in ("fresh-runner", "fresh-warm"):
        shutil.rmtree(work / d, ignore_errors=True)

    def sample(reports: list[dict]) -> Sample:
        return Sample([r["build_s"] for r in reports], "s", max(r["peak_kib"] for r in reports))

    return [
        Row(
            "2c. model-only rebuild on a fresh runner (registry cache), amd64 + arm64",
            sample(fresh),
            "ociforge cold build, amd64 + arm64 (row 4: what a runner without a cache pays)",
            cold,
            "<= 0.1x",
            0.1,
            note=f"warm local rebuild {sample(warm).cell()}; "
            + ("same digest as the warm rebuild" if all(same) else "DIGEST DIFFERS from warm"),
            extra={"warm_local_s": [r["build_s"] for r in warm], "same_digest": all(same)},
            baseline_kind="ociforge",
        )
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--lock", type=Path, required=True)
    ap.add_argument("--variant", type=int, default=0)
    ap.add_argument("--write-lock", action="store_true")
    args = ap.parse_args(argv)
    if args.write_lock:
        _write_lock(args.lock)
        print("{}")
    else:
        json.dump(_child(args.to, args.lock, args.variant), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
