"""The model server against a bare Flask app, and cold start against a bare model load.

    python -m benchmarks.runtime_bench [--bursts 8] [--duration 2] [--workers N] [--threads 8] [--runs 5]

Throughput: requests per second and p99 latency for a small JSON prediction,
``python -m ociforge_runtime`` against a bare Flask app calling the same
predict function, both under gunicorn with the same gthread worker and thread
counts, driven by the same keep-alive load generator on loopback, all three servers
up at once and loaded in interleaved bursts (medians; target: the
runtime at >= 90% of the bare app's requests per second).

Cold start: process start to the first successful prediction over HTTP, against
``python -c "import pickle; load model; predict"`` (target: within 1.5x).

Every ratio is measured in the same run as its baseline.  This is a benchmark,
not a test: it prints, it never asserts.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from .common import table

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ROOT / "runtimes"
sys.path.insert(0, str(RUNTIMES))

from ociforge_runtime.config import available_cpus  # noqa: E402
from ociforge_runtime.package import package_files, write_package  # noqa: E402


def small_json(x):
    """The benchmarked prediction: a few floats in, a small JSON object out."""
    feats = x["features"]
    return {"score": sum(feats) / len(feats), "label": "positive" if feats[0] > 0 else "negative"}


class NumpyLinear:
    """A realistic small model for cold start: numpy weights, predict = dot product."""

    def __init__(self):
        import numpy as np

        rng = np.random.default_rng(0)
        self.w = rng.normal(size=(64, 4))

    def predict(self, x):
        import numpy as np

        return (np.asarray(x, dtype=float) @ self.w).tolist()


BARE_APP = textwrap.dedent(
    """
    import os, pickle
    from flask import Flask, jsonify, request
    with open(os.path.join(os.environ["OCIFORGE_MODEL_DIR"], "model.pkl"), "rb") as fh:
        predict = pickle.load(fh)
    app = Flask(__name__)

    @app.post("/predict")
    def route():
        return jsonify({"prediction": predict(request.get_json())})
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ load generator


def _request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _one_connection(port: int, req: bytes, stop_at: float, out: list, errors: list) -> None:
    sock = None
    buf = b""
    while time.monotonic() < stop_at:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
            t0 = time.perf_counter()
            sock.sendall(req)
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            while len(buf) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed mid-body")
                buf += chunk
            buf = buf[length:]
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
            else:
                out.append(time.perf_counter() - t0)
            if close:
                sock.close()
                sock = None
        except OSError as exc:
            errors.append(repr(exc))
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()


DEFAULT_BODY = b'{"features": [0.5, 1.5, -2.0, 3.25]}'


def _client_process(port: int, conns: int, duration: float, queue, body: bytes) -> None:
    req = _request_bytes(port, body)
    stop_at = time.monotonic() + duration
    out: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_one_connection, args=(port, req, stop_at, out, errors))
        for _ in range(conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((out, errors[:20], len(errors)))


def drive(port: int, duration: float, procs: int, conns: int, body: bytes = DEFAULT_BODY) -> dict:
    """Keep-alive load from ``procs`` processes x ``conns`` connections; rps and latencies.
    ``body`` is the JSON posted to ``/predict`` (the table runner posts the iris sample)."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_client_process, args=(port, conns, duration, queue, body))
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    for _ in workers:
        out, errs, nerr = queue.get()
        latencies.extend(out)
        errors += nerr
        samples.extend(errs)
    for w in workers:
        w.join()
    latencies.sort()
    n = len(latencies)
    return {
        "rps": n / duration,
        "p50_ms": latencies[n // 2] * 1000 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "errors": errors,
        "error_samples": samples[:3],
    }


def interleaved(
    ports: dict[str, int], bursts: int, burst_s: float, procs: int, conns: int, body: bytes
) -> dict[str, list[dict]]:
    """Load servers that are all up in turn, ``burst_s`` seconds each, ``bursts`` times (the
    order rotates every burst); each server's ``drive`` results, a burst each.

    A shared machine's speed drifts over seconds. With short interleaved bursts every server
    sees the same drift, where one long run each would leave a slow spell on one side only.
    """
    names = list(ports)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(bursts):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            results[name].append(drive(ports[name], burst_s, procs, conns, body))
    return results


# ------------------------------------------------------------------ servers


def _wait_predict(port: int, body: bytes, proc: subprocess.Popen, timeout: float = 60.0) -> float:
    """Poll until a prediction succeeds; returns the perf_counter time of success."""
    req = _request_bytes(port, body)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                sock.sendall(req)
                data = b""
                while b"\r\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"HTTP/1.1 200"):
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("server never answered a prediction")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_runtime(
    model_dir: str, port: int, workers: int, threads: int, access_log: bool, log
) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(RUNTIMES),
        "OCIFORGE_MODEL_DIR": model_dir,
        "PORT": str(port),
        "OCIFORGE_WORKERS": str(workers),
        "OCIFORGE_THREADS": str(threads),
        "OCIFORGE_ACCESS_LOG": "1" if access_log else "0",
        "OCIFORGE_LOG_LEVEL": "warning",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ociforge_runtime"], env=env, stdout=log, stderr=subprocess.DEVNULL
    )


def start_bare(
    app_dir: str, model_dir: str, port: int, workers: int, threads: int
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": app_dir, "OCIFORGE_MODEL_DIR": model_dir}
    cmd = [
        sys.executable, "-m", "gunicorn", "bare_app:app",
        "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
        "--workers", str(workers), "--threads", str(threads), "--keep-alive", "5",
        "--log-level", "warning",
    ]  # fmt: skip
    if (
        "--no-control-socket"
        in subprocess.run(
            [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True
        ).stdout
    ):
        cmd.append("--no-control-socket")  # as the runtime does (gunicorn >= 25)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def throughput(args, tmp: str) -> list[dict]:
    model_dir = os.path.join(tmp, "small_json")
    write_package(model_dir, package_files(small_json, card={"name": "small-json"}))
    with open(os.path.join(tmp, "bare_app.py"), "w") as fh:
        fh.write(BARE_APP)
    body = b'{"features": [1, 2]}'
    log_file = open(os.path.join(tmp, "runtime-stdout.log"), "wb")  # noqa: SIM115
    configs = {
        "bare Flask + gunicorn": lambda port: start_bare(
            tmp, model_dir, port, args.workers, args.threads
        ),
        "ociforge runtime (access log on)": lambda port: start_runtime(
            model_dir, port, args.workers, args.threads, True, log_file
        ),
        "ociforge runtime (access log off)": lambda port: start_runtime(
            model_dir, port, args.workers, args.threads, False, log_file
        ),
    }
    procs: list[subprocess.Popen] = []
    ports: dict[str, int] = {}
    try:
        for name, start in configs.items():
            port = ports[name] = free_port()
            procs.append(start(port))
            _wait_predict(port, body, procs[-1])
            drive(port, 1.0, args.client_procs, args.conns)  # warm-up
        bursts = interleaved(ports, args.bursts, args.duration, args.client_procs, args.conns, body)
    finally:
        for proc in procs:
            _stop(proc)
        log_file.close()
    results = {
        name: {
            "rps": statistics.median(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "error_samples": [e for r in runs for e in r["error_samples"]][:3],
        }
        for name, runs in bursts.items()
    }
    base = results["bare Flask + gunicorn"]
    rows = []
    for name, r in results.items():
        rows.append(
            {
                "what": name,
                "rps": f"{r['rps']:.0f}",
                "p50 ms": f"{r['p50_ms']:.2f}",
                "p99 ms": f"{r['p99_ms']:.2f}",
                "errors": r["errors"],
                "rps ratio": f"{r['rps'] / base['rps']:.2f}",
                "p99 ratio": f"{r['p99_ms'] / base['p99_ms']:.2f}",
            }
        )
        if r["error_samples"]:
            print(name, "errors:", r["error_samples"], file=sys.stderr)
    return rows


def cold_start(args, tmp: str) -> list[dict]:
    models: list[tuple[str, object, str]] = [
        ("numpy linear", NumpyLinear(), "[" + ",".join(["[0.1]*64"] * 1) + "]")
    ]
    try:
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        X, y = load_iris(return_X_y=True)
        models.append(
            (
                "scikit-learn LogisticRegression",
                LogisticRegression(max_iter=500).fit(X, y),
                "[[5.1, 3.5, 1.4, 0.2]]",
            )
        )
    except ImportError:
        print("scikit-learn not installed: cold start with the numpy model only", file=sys.stderr)
    rows = []
    for name, model, sample_expr in models:
        model_dir = os.path.join(tmp, name.replace(" ", "_"))
        write_package(model_dir, package_files(model, card={"name": "cold"}))
        sample = str(eval(sample_expr)).encode()  # noqa: S307 - our own literal
        bare_cmd = [
            sys.executable, "-c",
            "import pickle, json, sys; m = pickle.load(open(sys.argv[1] + '/model.pkl', 'rb')); "
            "print(m.predict(json.loads(sys.argv[2])))",
            model_dir, sample.decode(),
        ]  # fmt: skip
        bare_times, server_times = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(bare_cmd, check=True, capture_output=True)
            bare_times.append(time.perf_counter() - t0)
            port = free_port()
            t0 = time.perf_counter()
            proc = start_runtime(
                model_dir, port, args.workers, args.threads, True, subprocess.DEVNULL
            )
            try:
                server_times.append(_wait_predict(port, sample, proc) - t0)
            finally:
                _stop(proc)
        bare, server = statistics.median(bare_times), statistics.median(server_times)
        rows.append(
            {
                "model": name,
                "bare load+predict ms": f"{bare * 1000:.0f}",
                "server start to 1st prediction ms": f"{server * 1000:.0f}",
                "ratio": f"{server / bare:.2f}",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=2.0, help="seconds of load per server per burst"
    )
    parser.add_argument("--bursts", type=int, default=8, help="interleaved bursts per server")
    parser.add_argument("--workers", type=int, default=available_cpus())
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--conns", type=int, default=16, help="keep-alive connections per client process"
    )
    parser.add_argument("--runs", type=int, default=5, help="cold starts per model")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-cold-start", action="store_true")
    args = parser.parse_args()
    print(
        f"{available_cpus()} CPUs; gunicorn gthread, {args.workers} workers x {args.threads} threads; "
        f"load: {args.client_procs} processes x {args.conns} keep-alive connections, "
        f"{args.bursts} interleaved bursts of {args.duration:g}s each (medians)"
    )
    with tempfile.TemporaryDirectory(prefix="ociforge-bench-") as tmp:
        if not args.skip_throughput:
            rows = throughput(args, tmp)
            print("\nThroughput, small JSON prediction (target: rps ratio >= 0.90)\n")
            print(table(rows, [(k, k) for k in rows[0]]))
        if not args.skip_cold_start:
            rows = cold_start(args, tmp)
            print(f"\nCold start, median of {args.runs} (target: ratio <= 1.5)\n")
            print(table(rows, [(k, k) for k in rows[0]]))


if __name__ == "__main__":
    main()
