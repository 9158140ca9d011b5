"""Rows 8 and 9: cold start and serving, each image run from its unpacked rootfs under bwrap.

Cold start: process start to the first correct prediction over HTTP, for the ociforge image and
the Dockerfile-built one (both start the same server: only what the image holds differs), and a
bare ``python -c "import pickle; load model; predict"`` in the ociforge rootfs (the floor).

Serving: the ociforge image's server as shipped (its defaults, access log on) against a bare
Flask app calling the same pickled predict, under the same gunicorn (gthread) worker and thread
counts, in the same rootfs, driven by the same keep-alive load generator on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

from tests.support.rootfs import run as run_in

from . import runtime_bench
from .imagerun import Rootfs, free_port, stop, until_predicts
from .stats import Row, Sample

SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
BODY = json.dumps(SAMPLE).encode()
BARE_LOAD = (
    "import json, pickle, sys; "
    "m = pickle.load(open('/opt/ociforge/model/model.pkl', 'rb')); "
    f"print(json.dumps(m({SAMPLE!r})))"
)


def _python(rootfs: Rootfs) -> str:
    return rootfs.argv[0] if rootfs.argv[0].startswith("/") else "/usr/bin/python3"


def bare_once(rootfs: Rootfs) -> tuple[float, object]:
    t0 = time.perf_counter()
    proc = rootfs.popen([_python(rootfs), "-c", BARE_LOAD])
    out, _ = proc.communicate(timeout=120)
    t = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"bare load failed: {out[-2000:]}")
    return t, json.loads(out.strip().splitlines()[-1])


def server_once(rootfs: Rootfs, expect) -> float:
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = rootfs.popen(env={"PORT": str(port)}, log=log)
        try:
            return until_predicts(proc, port, BODY, expect) - t0
        finally:
            stop(proc)


def cold_start(ours: Rootfs, theirs: Rootfs, runs: int) -> list[Row]:
    bare, mine, dockerfile = [], [], []
    expect = None
    for _ in range(runs):
        t, expect = bare_once(ours)
        bare.append(t)
        mine.append(server_once(ours, expect))
        dockerfile.append(server_once(theirs, expect))
    m = Sample(mine)
    return [
        Row(
            "8. cold start to 1st prediction",
            m,
            "pip Dockerfile-built image, same server",
            Sample(dockerfile),
            "<= 1.0x",
            1.0,
            baseline_kind="pip Dockerfile",
        ),
        Row(
            "8. cold start to 1st prediction",
            m,
            "bare python -c 'load model; predict' (same rootfs)",
            Sample(bare),
            "<= 1.1x",
            1.1,
            baseline_kind="tool",
        ),
    ]


def _gunicorn_flags(rootfs: Rootfs) -> list[str]:
    """``--no-control-socket`` where the image's gunicorn has it, as the runtime passes it."""
    proc = run_in(
        rootfs.path,
        [_python(rootfs), "-m", "gunicorn", "--help"],
        env=rootfs.env,
        uid=rootfs.uid,
        gid=rootfs.gid,
    )
    return ["--no-control-socket"] if "--no-control-socket" in proc.stdout else []


def serving(ours: Rootfs, burst_s: float, workers: int, bursts: int, threads: int = 8) -> list[Row]:
    """The runtime as shipped, the bare app and the runtime without its access log, all three
    started at once and loaded in interleaved bursts (``runtime_bench.interleaved``)."""
    procs, conns = 2, 16
    names = ("runtime", "bare", "quiet")
    with contextlib.ExitStack() as stack:
        app = stack.enter_context(tempfile.TemporaryDirectory(prefix="ociforge-bench-app-"))
        Path(app, "bare_app.py").write_text(runtime_bench.BARE_APP)
        os.chmod(app, 0o755)
        bare_env = {"PYTHONPATH": ours.env.get("PYTHONPATH", "") + ":/opt/bench"}
        bare_argv = [
            _python(ours), "-m", "gunicorn", "bare_app:app", "--worker-class", "gthread",
            "--workers", str(workers), "--threads", str(threads), "--keep-alive", "5",
            "--log-level", "warning", *_gunicorn_flags(ours),
        ]  # fmt: skip
        ports: dict[str, int] = {}
        for name in names:
            port = ports[name] = free_port()
            log = stack.enter_context(tempfile.TemporaryFile("w+"))
            if name in ("runtime", "quiet"):
                env = {"PORT": str(port), "OCIFORGE_WORKERS": str(workers)}
                env["OCIFORGE_THREADS"] = str(threads)
                if name == "quiet":
                    env["OCIFORGE_ACCESS_LOG"] = "0"
                proc = ours.popen(env=env, log=log)
            else:
                argv = [*bare_argv, "--bind", f"127.0.0.1:{port}"]
                proc = ours.popen(argv, env=bare_env, binds=[(app, "/opt/bench")], log=log)
            stack.callback(stop, proc)
            until_predicts(proc, port, BODY, None, expect_any=True)
            runtime_bench.drive(port, 1.0, procs, conns, BODY)  # warm-up
        results = runtime_bench.interleaved(ports, bursts, burst_s, procs, conns, BODY)
    mine, bare, quiet = results["runtime"], results["bare"], results["quiet"]
    note = (
        f"gthread {workers}x{threads}, {procs}x{conns} keep-alive conns, "
        f"{bursts} interleaved {burst_s:g}s bursts each"
    )
    errors = sum(r["errors"] for r in mine + bare + quiet)
    if errors:
        note += f"; {errors} errors"
    return [
        Row(
            "9. serving, requests/s",
            Sample([r["rps"] for r in mine], "rps"),
            "bare Flask app, same gunicorn settings",
            Sample([r["rps"] for r in bare], "rps"),
            ">= 0.9x",
            0.9,
            higher_is_better=True,
            note=note + "; runtime as shipped (access log on)",
            baseline_kind="tool",
        ),
        Row(
            "9. serving, requests/s, access log off",
            Sample([r["rps"] for r in quiet], "rps"),
            "bare Flask app, same gunicorn settings",
            Sample([r["rps"] for r in bare], "rps"),
            higher_is_better=True,
            note="OCIFORGE_ACCESS_LOG=0 (the bare app logs no requests either)",
            baseline_kind="tool",
        ),
        Row(
            "9. serving, p99 latency",
            Sample([r["p99_ms"] for r in mine], "ms"),
            "bare Flask app, same gunicorn settings",
            Sample([r["p99_ms"] for r in bare], "ms"),
            baseline_kind="tool",
        ),
    ]
