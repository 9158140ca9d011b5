"""The model server against a bare Flask app, and cold start against a bare model load.

    python -m benchmarks.runtime_bench [--bursts 8] [--duration 2] [--workers N] [--threads 8] [--runs 5]

Throughput: requests per second and p99 latency for a small JSON prediction,
``python -m ociforge_runtime`` against a bare Flask app calling the same
predict function, both under gunicorn with the same worker and thread counts
(the bare app with ``gthread``, the runtime with its own worker, which reads
whole requests in an event loop before a thread runs the app), driven by the
same keep-alive load generator on loopback, all three servers
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


def _request_bytes(port: int, body: bytes, path: str = "/predict") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
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


def _client_process(
    port: int, conns: int, duration: float, queue, body: bytes, path: str = "/predict"
) -> None:
    req = _request_bytes(port, body, path)
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


def drive(
    port: int,
    duration: float,
    procs: int,
    conns: int,
    body: bytes = DEFAULT_BODY,
    path: str = "/predict",
) -> dict:
    """Keep-alive load from ``procs`` processes x ``conns`` connections; rps and latencies.
    ``body`` is the JSON posted to ``path`` (the table runner posts the iris sample)."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_client_process, args=(port, conns, duration, queue, body, path))
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
    ports: dict[str, int],
    bursts: int,
    burst_s: float,
    procs: int,
    conns: int,
    body: bytes,
    load=None,
) -> dict[str, list[dict]]:
    """Load servers that are all up in turn, ``burst_s`` seconds each, ``bursts`` times (the
    order rotates every burst); each server's ``drive`` results (or ``load``'s), a burst each.

    A shared machine's speed drifts over seconds. With short interleaved bursts every server
    sees the same drift, where one long run each would leave a slow spell on one side only.
    """
    names = list(ports)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(bursts):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            fn = load or drive  # load(port, seconds, procs, conns, body) -> drive's dict
            results[name].append(fn(ports[name], burst_s, procs, conns, body))
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


def tensor_sum(x):
    """The binary-vs-JSON prediction: a large tensor in, its sum out (the input path dominates)."""
    import numpy as np

    return np.asarray([x.sum(dtype=np.float64)])


def binary_vs_json(args, tmp: str) -> list[dict]:
    """OIP v2 infer with a 1 MB FP32 input (262,144 values), JSON ``data`` against the binary
    tensor extension, the same server and client (one keep-alive connection, sequential),
    interleaved in rounds; medians of per-request latency."""
    import json as _json

    import numpy as np
    import requests

    model_dir = os.path.join(tmp, "tensor_sum")
    write_package(model_dir, package_files(tensor_sum, card={"name": "tsum"}))
    port = free_port()
    log = open(os.path.join(tmp, "binary-stdout.log"), "wb")  # noqa: SIM115
    proc = start_runtime(model_dir, port, 1, args.threads, False, log)
    url = f"http://127.0.0.1:{port}/v2/models/tsum/infer"
    x = np.random.default_rng(0).random(262144, dtype=np.float32)
    raw = x.tobytes()
    header = _json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [x.size],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    bodies = {
        "JSON data": (
            _json.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [x.size], "datatype": "FP32", "data": x.tolist()}
                    ]
                }
            ).encode(),
            {"Content-Type": "application/json"},
        ),
        "binary extension": (
            header + raw,
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        ),
    }
    expected = float(x.sum(dtype=np.float64))
    times: dict[str, list[float]] = {k: [] for k in bodies}
    try:
        with requests.Session() as session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if session.get(f"http://127.0.0.1:{port}/v2/health/ready").ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("binary benchmark server did not start")
                time.sleep(0.05)
            for name, (body, headers) in bodies.items():  # warm up, and check the answer
                r = session.post(url, data=body, headers=headers)
                got = r.json()["outputs"][0]["data"][0]
                assert abs(got - expected) < 1e-3 * abs(expected), (name, got, expected)
            for _ in range(args.binary_rounds):
                for name, (body, headers) in bodies.items():
                    for _ in range(5):
                        t0 = time.perf_counter()
                        r = session.post(url, data=body, headers=headers)
                        times[name].append(time.perf_counter() - t0)
                        if r.status_code != 200:
                            raise RuntimeError(f"{name}: {r.status_code} {r.text[:200]}")
    finally:
        _stop(proc)
        log.close()
    json_ms = statistics.median(times["JSON data"]) * 1000
    rows = []
    for name, (body, _) in bodies.items():
        ms = statistics.median(times[name]) * 1000
        rows.append(
            {
                "encoding": name,
                "body_MB": f"{len(body) / 1e6:.2f}",
                "requests": len(times[name]),
                "median_ms": f"{ms:.2f}",
                "req_per_s": f"{1000 / ms:.1f}",
                "speedup": f"{json_ms / ms:.1f}x",
                "_seconds": times[name],  # raw samples (benchmarks/protocols.py), not printed
            }
        )
    return rows


def affine(x):
    """The gRPC-vs-REST prediction: 2x + 1 on a float32 tensor."""
    import numpy as np

    return np.asarray(x, dtype=np.float32) * 2 + 1


def _rest_client(port: int, duration: float, body: bytes, queue) -> None:
    import requests

    url = f"http://127.0.0.1:{port}/v2/models/affine/infer"
    out: list[float] = []
    errors = 0
    with requests.Session() as session:
        stop_at = time.monotonic() + duration
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            r = session.post(url, data=body, headers={"Content-Type": "application/json"})
            if r.status_code == 200:
                out.append(time.perf_counter() - t0)
            else:
                errors += 1
    queue.put((out, errors))


def _grpc_client(port: int, duration: float, request: bytes, queue) -> None:
    import grpc  # imported in the forked client only: gRPC must not cross a fork

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,  # the request is serialized once, up front
            response_deserializer=lambda b: b,
        )
        out: list[float] = []
        errors = 0
        stop_at = time.monotonic() + duration
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                call(request, timeout=30)
                out.append(time.perf_counter() - t0)
            except grpc.RpcError:
                errors += 1
    queue.put((out, errors))


def grpc_vs_rest(args, tmp: str) -> list[dict]:
    """OIP v2 over gRPC (raw_input_contents) against OIP v2 REST (JSON ``data``) on the same
    server and model: ``--grpc-clients`` processes each sending requests one after another over
    one connection, the two protocols interleaved in ``--grpc-rounds`` rounds; requests/s summed
    over the clients (medians of the rounds), latency percentiles over all requests."""
    import json as _json

    import numpy as np

    sys.path.insert(0, str(RUNTIMES))
    from ociforge_runtime._proto import grpc_predict_v2_pb2 as pb

    model_dir = os.path.join(tmp, "affine")
    write_package(model_dir, package_files(affine, card={"name": "affine"}))
    port, gport = free_port(), free_port()
    log = open(os.path.join(tmp, "grpc-stdout.log"), "wb")  # noqa: SIM115
    env = {
        **os.environ,
        "PYTHONPATH": str(RUNTIMES),
        "OCIFORGE_MODEL_DIR": model_dir,
        "PORT": str(port),
        "GRPC_PORT": str(gport),
        "OCIFORGE_GRPC": "1",
        "OCIFORGE_WORKERS": str(args.workers),
        "OCIFORGE_THREADS": str(args.threads),
        "OCIFORGE_ACCESS_LOG": "0",
        "OCIFORGE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ociforge_runtime"], env=env, stdout=log, stderr=subprocess.DEVNULL
    )
    payloads = {
        "1x4 FP32": np.arange(4, dtype=np.float32).reshape(1, 4),
        "1 MB FP32": np.random.default_rng(0).random((1, 262144), dtype=np.float32),
    }
    rows = []
    ctx = mp.get_context("fork")
    try:
        _wait_predict(port, b"[1.0]", proc)  # /predict: the model is loaded in a worker
        for label, x in payloads.items():
            rest_body = _json.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": list(x.shape), "datatype": "FP32",
                         "data": x.ravel().tolist()}
                    ]
                }
            ).encode()  # fmt: skip
            request = pb.ModelInferRequest(model_name="affine")
            request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
            request.raw_input_contents.append(x.astype("<f4").tobytes())
            clients = {
                "REST (JSON)": (_rest_client, port, rest_body),
                "gRPC (raw)": (_grpc_client, gport, request.SerializeToString()),
            }
            rps: dict[str, list[float]] = {k: [] for k in clients}
            lat: dict[str, list[float]] = {k: [] for k in clients}
            errors = dict.fromkeys(clients, 0)
            for i in range(args.grpc_rounds):
                order = list(clients) if i % 2 == 0 else list(reversed(clients))
                for name in order:
                    fn, p, body = clients[name]
                    queue = ctx.Queue()
                    workers = [
                        ctx.Process(target=fn, args=(p, args.grpc_duration, body, queue))
                        for _ in range(args.grpc_clients)
                    ]
                    for w in workers:
                        w.start()
                    done = 0
                    for _ in workers:
                        out, errs = queue.get()
                        done += len(out)
                        lat[name].extend(out)
                        errors[name] += errs
                    for w in workers:
                        w.join()
                    rps[name].append(done / args.grpc_duration)
            base = statistics.median(rps["REST (JSON)"])
            for name in clients:
                ls = sorted(lat[name])
                n = len(ls)
                median_rps = statistics.median(rps[name])
                rows.append(
                    {
                        "input": label,
                        "protocol": name,
                        "req_per_s": f"{median_rps:.0f}",
                        "p50_ms": f"{ls[n // 2] * 1000:.2f}" if n else "-",
                        "p99_ms": f"{ls[min(n - 1, int(n * 0.99))] * 1000:.2f}" if n else "-",
                        "vs_REST": f"{median_rps / base:.2f}x" if base else "-",
                        "errors": errors[name],
                        "_rps": rps[name],  # raw samples (benchmarks/protocols.py), not printed
                        "_p99_ms": ls[min(n - 1, int(n * 0.99))] * 1000 if n else None,
                    }
                )
    finally:
        _stop(proc)
        log.close()
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
    parser.add_argument("--skip-binary", action="store_true")
    parser.add_argument(
        "--binary-rounds", type=int, default=6, help="rounds of 5 requests per encoding"
    )
    parser.add_argument("--skip-grpc", action="store_true")
    parser.add_argument("--grpc-rounds", type=int, default=4, help="rounds per protocol")
    parser.add_argument("--grpc-duration", type=float, default=2.0, help="seconds per round")
    parser.add_argument("--grpc-clients", type=int, default=4, help="client processes")
    args = parser.parse_args()
    print(
        f"{available_cpus()} CPUs; gunicorn, {args.workers} workers x {args.threads} threads "
        "(bare app: gthread; runtime: its own worker); "
        f"load: {args.client_procs} processes x {args.conns} keep-alive connections, "
        f"{args.bursts} interleaved bursts of {args.duration:g}s each (medians)"
    )
    with tempfile.TemporaryDirectory(prefix="ociforge-bench-") as tmp:
        if not args.skip_throughput:
            rows = throughput(args, tmp)
            print("\nThroughput, small JSON prediction (target: rps ratio >= 0.90)\n")
            print(table(rows, [(k, k) for k in rows[0] if not k.startswith("_")]))
        if not args.skip_cold_start:
            rows = cold_start(args, tmp)
            print(f"\nCold start, median of {args.runs} (target: ratio <= 1.5)\n")
            print(table(rows, [(k, k) for k in rows[0] if not k.startswith("_")]))
        if not args.skip_binary:
            rows = binary_vs_json(args, tmp)
            print("\nOIP v2 infer, 1 MB FP32 input: JSON vs binary tensor extension (medians)\n")
            print(table(rows, [(k, k) for k in rows[0] if not k.startswith("_")]))
        if not args.skip_grpc:
            rows = grpc_vs_rest(args, tmp)
            print(
                f"\nOIP v2 over gRPC vs REST, same server and model, {args.grpc_clients} "
                "sequential clients (medians)\n"
            )
            print(table(rows, [(k, k) for k in rows[0] if not k.startswith("_")]))


if __name__ == "__main__":
    main()
