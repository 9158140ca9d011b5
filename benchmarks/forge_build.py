"""One ociforge build of the bundled iris model, in a process of its own, reported as JSON.

    python -m benchmarks.forge_build --to oci:DIR:TAG [--platform P ...] [--compression gzip]
        [--variant N] [--add REQ ...] [--grpc] [--torch]

Run in a fresh process so its peak memory (``VmHWM``) is the build's own and the caches it sees
are the ones the caller chose (``OCIFORGE_CACHE``, ``UV_CACHE_DIR``). ``--variant`` refits the
model with another regularization strength: a different ``model.pkl`` and nothing else, which is
the "model-only change" of the rebuild rows. The time reported is the ``ociforge.build`` call (the
model is trained before, as in a user's training script); the whole process is reported too.
``--add six`` builds the same model with one more requirement (the "added one dependency" row:
the model's ``auto`` requirements, then ``six``); ``--grpc`` builds the image with gRPC served
too; ``--torch`` builds the big CUDA image's model instead (a function of ``torch``, requirements
``torch``, ``--variant`` changing a constant in it: the model-only change). ``phases`` in the
report: the wall time spent in each of the build's main steps (:data:`STEPS`); ``cpu_s``: the
CPU time of the process and its children.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

T_START = time.perf_counter()


def make_model(variant: int):
    """The example's predict function; ``variant`` > 0 refits its classifier with C=1/(1+variant)."""
    from ociforge.examples import iris

    predict = iris.make_model()
    if variant:
        from sklearn.datasets import load_iris

        cells = dict(zip(predict.__code__.co_freevars, predict.__closure__, strict=True))
        data = load_iris()
        cells["clf"].cell_contents.set_params(C=1.0 / (1 + variant)).fit(data.data, data.target)
    return predict


def torch_model(variant: int):
    """The big image's model: a small function of torch; ``variant`` changes its scale only."""
    scale = 2.0 + variant

    def predict(rows):
        import importlib  # torch is the image's, never this machine's (not a benchmark dependency)

        torch = importlib.import_module("torch")
        return (torch.as_tensor(rows, dtype=torch.float32) * scale).tolist()

    return predict


def requirements_for(model, add: list[str]) -> list[str] | str:
    """``"auto"``, or (with ``add``) the very pins ``"auto"`` gives, plus ``add``."""
    if not add:
        return "auto"
    from ociforge.model.imports import auto_requirements
    from ociforge.model.package import package_model

    pkl = package_model(model, None, {"name": "iris", "version": "1.0.0"}, {})["model.pkl"]
    return auto_requirements(pkl)[0] + list(add)


# The build's steps whose wall time the report gives ("phases"), as module and attribute: the
# cold build's time is mostly theirs (resolve, download, the wheel layers' inflate -> tar ->
# compress -> hash, the bytecode closure, the library check, writing the image out).
STEPS = (
    ("ociforge.builder.build", "resolve"),
    ("ociforge.builder.build", "fetch"),  # up front: offline, or on demand with a cache
    ("ociforge.python.wheelcache", "Fetching.paths"),  # the waits for wheels fetched behind
    ("ociforge.builder.build", "wheel_layers"),
    ("ociforge.builder.layers", "startup_bytecode_layer"),
    ("ociforge.builder.cachestep", "check_libraries"),
    ("ociforge.builder.build", "write_to"),
)


def time_steps() -> dict[str, float]:
    """Wrap :data:`STEPS` so that each adds its wall time (summed over platforms and calls) to
    the dict returned; what they do is unchanged. Measured from outside so the library carries
    no timing code; a step that is no longer there is left out, not an error."""
    import functools
    import importlib
    import threading

    spent: dict[str, float] = {}
    lock = threading.Lock()
    for module, path in STEPS:
        mod = importlib.import_module(module)
        *owners, name = path.split(".")  # "Class.method": the method, on its class
        for owner in owners:
            mod = getattr(mod, owner, None)
        real = getattr(mod, name, None)
        if real is None:
            continue

        @functools.wraps(real)
        def timed(*a, _real=real, _name=path, **k):
            t = time.perf_counter()
            try:
                return _real(*a, **k)
            finally:
                with lock:
                    spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t

        setattr(mod, name, timed)
    return spent


def cpu_s() -> float:
    """CPU seconds of this process (all threads) and its waited-for children (the bytecode
    workers, uv): on a shared machine, steadier than the wall time."""
    t = os.times()
    return round(t.user + t.system + t.children_user + t.children_system, 3)


def peak_kib() -> int:
    """This process's peak resident memory (``VmHWM``: unlike ru_maxrss, not inherited)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--to", required=True)
    ap.add_argument("--platform", action="append", default=[])
    ap.add_argument("--compression", default="gzip", choices=("gzip", "zstd", "none"))
    ap.add_argument("--variant", type=int, default=0)
    ap.add_argument("--add", action="append", default=[], help="one more requirement")
    ap.add_argument("--grpc", action="store_true")
    ap.add_argument("--torch", action="store_true")
    args = ap.parse_args(argv)

    import ociforge
    from ociforge.examples import iris

    if args.torch:
        model, reqs, name, meta = torch_model(args.variant), ["torch", *args.add], "big", {}
    else:
        model = make_model(args.variant)
        reqs, name, meta = requirements_for(model, args.add), "iris", iris.METADATA
    phases = time_steps()
    t0 = time.perf_counter()
    result = ociforge.build(
        model,
        platforms=args.platform or ["linux/amd64"],
        requirements=reqs,
        to=args.to,
        name=name,
        version="1.0.0",
        metadata=meta,
        compression=args.compression,
        grpc=args.grpc,
    )
    build_s = time.perf_counter() - t0
    first = next(iter(result.locks.values()))
    out = {
        "build_s": build_s,
        "process_s": time.perf_counter() - T_START,
        "cpu_s": cpu_s(),
        "peak_kib": peak_kib(),
        "digest": result.digest,
        "size": result.size,
        "pins": [f"{w.name}=={w.version}" for w in first.packages],
        "layers": result.layers,
        "phases": {k: round(v, 3) for k, v in phases.items()},
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
