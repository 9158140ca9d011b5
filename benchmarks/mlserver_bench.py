"""Row 13: MLServer as the serving peer. The same scikit-learn model, served over the Open
Inference Protocol v2 (REST and gRPC) by the ociforge image and by MLServer, one worker process
each, loaded by the same clients; and each server's cold start.

* ociforge: the example image built with ``grpc=True`` (REST on 8080, gRPC beside it), its own
  entrypoint run from its unpacked rootfs under bubblewrap (as rows 8 and 9), ``OCIFORGE_WORKERS=1``,
  everything else as shipped (access log on).
* MLServer 1.7 with mlserver-sklearn, in its own venv (``benchmarks.peers``), ``mlserver start``
  on a folder holding ``settings.json`` and ``model-settings.json`` and the very classifier of the
  ociforge image saved with joblib (``model.joblib``), as MLServer's docs lay it out. MLServer
  has two ways to run one model: ``parallel_workers: 0`` (inference in the server process) and its
  default ``parallel_workers: 1`` (one inference process beside the server, fed over IPC). Both are
  measured; the target row takes whichever served more requests per second in the run.
* Load: a small prediction (two iris rows, FP64 [2, 4]) to ``/v2/models/iris/infer`` from the
  keep-alive generator of row 9 (``runtime_bench.drive``), and ``ModelInfer`` over gRPC from
  client processes with a thread per in-flight call, each calling one after another; all servers
  up at once, loaded in interleaved bursts (``runtime_bench.interleaved``).
* Cold start: process start to the first successful v2 ``infer`` over REST, alternating sides.
* Server CPU per request (in the requests/s rows' notes): the CPU time of each server's whole
  process tree (``/proc``) over its bursts, divided by the requests it answered. On a shared
  machine requests/s also depends on the scheduler's share (a server with more threads gets
  more of a busy CPU); CPU per request does not, so it says which server does less work.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import pickle
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import peers, runtime_bench
from .imagerun import Rootfs, free_port, stop
from .stats import Row, Sample

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
# the input is named as the example's metadata names it ("rows"); MLServer takes any name
PATH = "/v2/models/iris/infer"
BODY = json.dumps(
    {"inputs": [{"name": "rows", "shape": [2, 4], "datatype": "FP64", "data": sum(ROWS, [])}]}
).encode()
PROCS, CONNS = 2, 8  # load: 2 client processes x 8 keep-alive connections (or gRPC threads)


def classifier(model_files: dict[str, bytes]):
    """The fitted estimator inside the example's pickled predict function."""
    predict = pickle.loads(model_files["model.pkl"])
    for cell in predict.__closure__ or ():
        if hasattr(cell.cell_contents, "predict_proba"):
            return cell.cell_contents
    raise RuntimeError("no scikit-learn estimator in the model's closure")


def mlserver_folder(dest: Path, model_files: dict[str, bytes], parallel_workers: int) -> Path:
    """MLServer's model repository: settings.json, model-settings.json, model.joblib."""
    import joblib

    dest.mkdir(parents=True, exist_ok=True)
    joblib.dump(classifier(model_files), dest / "model.joblib")
    (dest / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "iris",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    (dest / "settings.json").write_text(json.dumps({"parallel_workers": parallel_workers}))
    return dest


def grpc_request() -> bytes:
    """The same two rows as a serialized ``ModelInferRequest`` (typed ``fp64_contents``)."""
    from ociforge_runtime._proto import grpc_predict_v2_pb2 as pb

    req = pb.ModelInferRequest(model_name="iris")
    t = req.inputs.add(name="rows", datatype="FP64", shape=[2, 4])
    t.contents.fp64_contents.extend(sum(ROWS, []))
    return req.SerializeToString()


def _grpc_process(port: int, threads: int, duration: float, request: bytes, queue) -> None:
    import grpc  # in the forked client only: gRPC must not cross a fork

    out: list[float] = []
    errors: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        stop_at = time.monotonic() + duration

        def loop() -> None:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    call(request, timeout=30)
                    out.append(time.perf_counter() - t0)
                except grpc.RpcError as e:
                    errors.append(str(e.code()))

        ts = [threading.Thread(target=loop) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    queue.put((out, errors[:3], len(errors)))


def grpc_drive(port: int, duration: float, procs: int, threads: int, request: bytes) -> dict:
    """gRPC load in ``drive``'s shape: rps, p50/p99 and errors."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    ws = [
        ctx.Process(target=_grpc_process, args=(port, threads, duration, request, queue))
        for _ in range(procs)
    ]
    for w in ws:
        w.start()
    lat: list[float] = []
    errors, samples = 0, []
    for _ in ws:
        out, errs, n = queue.get()
        lat += out
        errors += n
        samples += errs
    for w in ws:
        w.join()
    lat.sort()
    n = len(lat)
    return {
        "rps": n / duration,
        "p50_ms": lat[n // 2] * 1000 if n else float("nan"),
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "errors": errors,
        "error_samples": samples[:3],
    }


def _infer_ok(port: int) -> bool:
    """Whether v2 ``infer`` answers with outputs; a refusal of the request itself (4xx other than
    404, or MLServer's 400 "not ready yet", while the model loads) raises at once instead of
    polling until the timeout."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", PATH, BODY, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except OSError:
        return False
    finally:
        conn.close()
    if 400 <= resp.status < 500 and resp.status not in (404, 429) and b"not ready" not in data:
        raise RuntimeError(f"infer refused: {resp.status} {data[:300]!r}")
    return resp.status == 200 and b"outputs" in data


def until_infers(proc: subprocess.Popen, port: int, timeout: float = 120.0) -> float:
    """Poll v2 ``infer`` until it answers 200 with outputs; the perf_counter time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = proc.stdout.read()[-3000:] if proc.stdout else "(see its log)"
            raise RuntimeError(f"server exited {proc.returncode}: {said}")
        if _infer_ok(port):
            return time.perf_counter()
        time.sleep(0.005)
    raise RuntimeError("server never answered an infer")


class Servers:
    """Starts the servers of this row; each returns its Popen, its ports (http, grpc)."""

    def __init__(self, rootfs: Rootfs, mlserver: Path, folders: dict[int, Path]) -> None:
        self.rootfs, self.mlserver, self.folders = rootfs, mlserver, folders

    def ociforge(self, log=None) -> tuple[subprocess.Popen, int, int]:
        http, grpc = free_port(), free_port()
        env = {"PORT": str(http), "GRPC_PORT": str(grpc), "OCIFORGE_WORKERS": "1"}
        return self.rootfs.popen(env=env, log=log), http, grpc

    def mlserver_(self, parallel: int, log=None) -> tuple[subprocess.Popen, int, int]:
        http, grpc, metrics = free_port(), free_port(), free_port()
        env = {
            "MLSERVER_HTTP_PORT": str(http),
            "MLSERVER_GRPC_PORT": str(grpc),
            "MLSERVER_METRICS_PORT": str(metrics),
            "MLSERVER_HOST": "127.0.0.1",
        }
        import os

        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        proc = subprocess.Popen(
            [str(self.mlserver), "start", str(self.folders[parallel])],
            env={**clean, **env},
            stdout=log if log is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        return proc, http, grpc


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (``/proc``; 0 for a process that
    is gone). Threads are counted through their process."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    todo, total = [pid], 0.0
    while todo:
        p = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return total


def with_cpu(load, pids: dict[int, int]):
    """``load`` (port, seconds, procs, conns, body -> drive's dict) that also reports the
    server's CPU milliseconds per answered request (``cpu_ms``); ``pids``: port -> server pid."""

    def measured(port: int, seconds: float, procs: int, conns: int, body: bytes) -> dict:
        before = tree_cpu_s(pids[port])
        result = load(port, seconds, procs, conns, body)
        answered = result["rps"] * seconds
        used = tree_cpu_s(pids[port]) - before
        result["cpu_ms"] = used * 1000 / answered if answered else float("nan")
        return result

    return measured


def _stop_tree(proc: subprocess.Popen) -> None:
    """Stop a server and, for MLServer, its inference workers (its own session)."""
    import os
    import signal

    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    stop(proc)
    if pgid is not None and pgid == proc.pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def cold_start(servers: Servers, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"ociforge": [], "mlserver": []}
    for i in range(runs):
        for side in ("ociforge", "mlserver") if i % 2 == 0 else ("mlserver", "ociforge"):
            with tempfile.TemporaryFile("w+") as log:
                t0 = time.perf_counter()
                proc, http, _g = (
                    servers.ociforge(log) if side == "ociforge" else servers.mlserver_(0, log)
                )
                try:
                    times[side].append(until_infers(proc, http) - t0)
                except RuntimeError as e:
                    log.seek(0)
                    raise RuntimeError(f"{side} cold start: {e}; {log.read()[-2000:]}") from None
                finally:
                    _stop_tree(proc)
    return times


def run(rootfs: Rootfs, model_files: dict, work: Path, runs: int, burst_s: float, bursts: int, log):
    """Rows 13: serving (REST, gRPC) and cold start against MLServer."""
    mls = peers.mlserver(log)
    folders = {p: mlserver_folder(work / f"mlserver-{p}", model_files, p) for p in (0, 1)}
    servers = Servers(rootfs, mls, folders)
    log("MLServer cold start (13)")
    cold = cold_start(servers, runs)
    log(
        f"cold start: ociforge {Sample(cold['ociforge']).cell()}, "
        f"MLServer {Sample(cold['mlserver']).cell()}"
    )
    request = grpc_request()
    names = {"ociforge": None, "mlserver-0": 0, "mlserver-1": 1}
    with contextlib.ExitStack() as stack:
        http_ports, grpc_ports, pids = {}, {}, {}
        for name, parallel in names.items():
            lf = stack.enter_context(tempfile.TemporaryFile("w+"))
            proc, http_ports[name], grpc_ports[name] = (
                servers.ociforge(lf) if parallel is None else servers.mlserver_(parallel, lf)
            )
            pids[http_ports[name]] = pids[grpc_ports[name]] = proc.pid
            stack.callback(_stop_tree, proc)
            try:
                until_infers(proc, http_ports[name])
            except RuntimeError as e:
                lf.seek(0)
                raise RuntimeError(f"{name}: {e}; {lf.read()[-2000:]}") from None
            runtime_bench.drive(http_ports[name], 0.5, PROCS, CONNS, BODY, PATH)  # warm-up
            grpc_drive(grpc_ports[name], 0.5, PROCS, CONNS, request)
        log("MLServer serving, REST (13)")
        rest = runtime_bench.interleaved(
            http_ports, bursts, burst_s, PROCS, CONNS, BODY,
            load=with_cpu(lambda port, s, p, c, b: runtime_bench.drive(port, s, p, c, b, PATH), pids),
        )  # fmt: skip
        log("MLServer serving, gRPC (13)")
        grpc = runtime_bench.interleaved(
            grpc_ports, bursts, burst_s, PROCS, CONNS, request,
            load=with_cpu(grpc_drive, pids),
        )  # fmt: skip
    return rows(cold, rest, grpc, bursts, burst_s)


def _med(rs: list[dict], key: str) -> float:
    import statistics

    return statistics.median(r[key] for r in rs)


def rows(cold: dict, rest: dict, grpc: dict, bursts: int, burst_s: float) -> list[Row]:
    out: list[Row] = []
    load = f"{PROCS}x{CONNS} {{what}}, {bursts} interleaved {burst_s:g}s bursts each"
    for proto, got, what in (
        ("REST", rest, "keep-alive conns"),
        ("gRPC", grpc, "threads, one call at a time each"),
    ):
        best = max(("mlserver-0", "mlserver-1"), key=lambda n: _med(got[n], "rps"))
        other = "mlserver-1" if best == "mlserver-0" else "mlserver-0"
        errors = sum(r["errors"] for rs in got.values() for r in rs)
        note = load.format(what=what) + (f"; {errors} errors" if errors else "")

        def label(n: str) -> str:
            return f"MLServer, parallel_workers={n[-1]}"

        def cpu(n: str, got: dict = got) -> str:
            return f"{_med(got[n], 'cpu_ms'):.2f}" if all("cpu_ms" in r for r in got[n]) else "?"

        mine = got["ociforge"]
        out += [
            Row(
                f"13. OIP v2 {proto}, requests/s",
                Sample([r["rps"] for r in mine], "rps"),
                f"{label(best)} (the faster of its two modes)",
                Sample([r["rps"] for r in got[best]], "rps"),
                ">= 1.2x",
                1.2,
                higher_is_better=True,
                note=f"{note}; server CPU per request {cpu('ociforge')} vs {cpu(best)} ms",
                baseline_kind="MLServer",
            ),
            Row(
                f"13. OIP v2 {proto}, p99 latency",
                Sample([r["p99_ms"] for r in mine], "ms"),
                label(best),
                Sample([r["p99_ms"] for r in got[best]], "ms"),
                "<= 1.0x",
                1.0,
                note=f"p50 {Sample([r['p50_ms'] for r in mine], 'ms').cell()} vs "
                f"{Sample([r['p50_ms'] for r in got[best]], 'ms').cell()}",
                baseline_kind="MLServer",
            ),
            Row(
                f"13. OIP v2 {proto}, requests/s",
                Sample([r["rps"] for r in mine], "rps"),
                label(other),
                Sample([r["rps"] for r in got[other]], "rps"),
                higher_is_better=True,
                note=f"p99 {Sample([r['p99_ms'] for r in got[other]], 'ms').cell()}; "
                f"server CPU per request {cpu('ociforge')} vs {cpu(other)} ms",
                baseline_kind="MLServer",
            ),
        ]
    out.append(
        Row(
            "13. cold start to 1st OIP v2 prediction",
            Sample(cold["ociforge"]),
            "MLServer (parallel_workers=0), mlserver start",
            Sample(cold["mlserver"]),
            "<= 0.7x",
            0.7,
            note="ociforge image under bwrap, 1 worker; MLServer from its venv",
            baseline_kind="MLServer",
        )
    )
    return out
