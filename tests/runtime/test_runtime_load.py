"""Bounded load on loopback: many concurrent clients, no failures; SIGTERM loses nothing.

Bounded in time *and* count, loopback only.  Latencies are printed (run with
``-s`` to see them), never asserted: timing depends on the machine.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time

import requests
import runtime_models as models

CLIENTS = 16
DURATION_S = 12.0
MAX_REQUESTS = 60_000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_load_many_concurrent_clients_no_failures(start_server):
    server = start_server(
        models.small_json, env={"OCIFORGE_WORKERS": "2", "OCIFORGE_ACCESS_LOG": "1"}
    )
    url = server.url + "/predict"
    counter = itertools.count()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + DURATION_S

    def client(i: int) -> None:
        session = requests.Session()
        mine: list[float] = []
        while time.monotonic() < stop_at and next(counter) < MAX_REQUESTS:
            body = {"features": [i, 1, 2, 3]}
            start = time.perf_counter()
            try:
                r = session.post(url, json=body, timeout=30)
                ok = r.status_code == 200 and r.json()["prediction"]["score"] == (i + 6) / 10.0
                if not ok:
                    with lock:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
            except requests.RequestException as exc:
                with lock:
                    failures.append(repr(exc))
            mine.append(time.perf_counter() - start)
        session.close()
        with lock:
            latencies.extend(mine)

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DURATION_S + 60)
    elapsed = time.monotonic() - began
    n = len(latencies)
    print(
        f"\nload: {CLIENTS} clients, {n} requests in {elapsed:.1f}s = {n / elapsed:.0f} req/s; "
        f"p50 {statistics.median(latencies) * 1000:.2f} ms, p99 {_percentile(latencies, 0.99) * 1000:.2f} ms, "
        f"max {max(latencies) * 1000:.2f} ms; failures {len(failures)}"
    )
    assert n > CLIENTS
    assert failures == []
    request_lines = [
        r for r in server.log_records() if r.get("event") == "request" and r["route"] == "/predict"
    ]
    assert len(request_lines) == n
    assert {r["status"] for r in request_lines} == {200}


def test_sigterm_during_load_loses_no_accepted_request(start_server, tmp_path):
    seen_log = tmp_path / "seen.log"
    server = start_server(
        models.tagged_request,
        env={"OCIFORGE_WORKERS": "2", "SEEN_LOG": str(seen_log), "OCIFORGE_GRACEFUL_TIMEOUT": "20"},
    )
    url = server.url + "/predict"
    ids = itertools.count()
    answered: dict[int, int] = {}
    refused: list[str] = []
    bad: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            rid = next(ids)
            try:
                r = session.post(url, json={"id": rid, "delay": 0.2}, timeout=30)
            except requests.ConnectionError as exc:
                # Not accepted (refused, or a kept-alive connection closed by the stopping
                # server before this request was read): the client may retry elsewhere.
                with lock:
                    refused.append(repr(exc))
                session.close()
                session = requests.Session()
                time.sleep(0.02)
                continue
            with lock:
                if r.status_code == 200 and r.json() == {"prediction": {"id": rid}}:
                    answered[rid] = r.status_code
                else:
                    bad.append(f"{rid}: {r.status_code} {r.text[:200]}")
        session.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    before = len(answered)
    code = server.terminate(timeout=30)  # SIGTERM while requests are in flight
    stop.set()
    for t in threads:
        t.join(40)
    seen = {int(x) for x in seen_log.read_text().split()}
    print(
        f"\nsigterm: {len(answered)} answered ({before} before SIGTERM), {len(refused)} refused after, exit {code}"
    )
    assert code == 0, server.logs()
    assert bad == []
    assert before > 0
    lost = seen - set(answered)
    assert not lost, f"requests that reached the model but got no answer: {sorted(lost)}"
    assert len(answered) > before  # requests in flight at SIGTERM were answered
