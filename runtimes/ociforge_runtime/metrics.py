"""Prometheus metrics without a client library, aggregated across gunicorn workers.

Each worker is its own process, and a scrape reaches only one of them, so a
per-process registry would report a random fraction of the traffic.  Each
worker therefore writes a JSON snapshot of its registry to a shared directory
about once a second (only when something changed), and ``/metrics`` sums the
answering worker's live numbers with the other workers' snapshots.  Counters
and histograms of workers that have exited are kept (counters must never go
down); their gauges are dropped.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

Labels = tuple[tuple[str, str], ...]
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(raw: str) -> str:
    """A valid Prometheus metric name from any string (for models' own metric keys)."""
    name = _NAME_BAD.sub("_", raw)
    return name if name and not name[0].isdigit() else f"_{name}"


class Registry:
    """Thread-safe counters, gauges and histograms for one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.meta: dict[str, tuple[str, str, tuple[float, ...]]] = {}
        self.counters: dict[tuple[str, Labels], float] = {}
        self.gauges: dict[tuple[str, Labels], float] = {}
        self.hists: dict[tuple[str, Labels], list[Any]] = {}
        self.version = 0

    def describe(self, name: str, kind: str, help_text: str, buckets: Iterable[float] = ()) -> None:
        with self._lock:
            self.meta.setdefault(name, (kind, help_text, tuple(buckets)))

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        key = (name, labels)
        with self._lock:
            self.counters[key] = self.counters.get(key, 0.0) + value
            self.version += 1

    def set(self, name: str, value: float, labels: Labels = ()) -> None:
        with self._lock:
            self.gauges[(name, labels)] = float(value)
            self.version += 1

    def observe(self, name: str, value: float, labels: Labels = ()) -> None:
        key = (name, labels)
        buckets = self.meta[name][2]
        idx = bisect.bisect_left(buckets, value)
        with self._lock:
            hist = self.hists.get(key)
            if hist is None:
                hist = self.hists[key] = [[0] * (len(buckets) + 1), 0.0, 0]
            hist[0][idx] += 1
            hist[1] += value
            hist[2] += 1
            self.version += 1

    def record_request(self, method: str, route: str, status: int, latency: float) -> None:
        """The per-request counter and latency histogram under one lock (hot path)."""
        count_key = (
            "ociforge_requests_total",
            (("method", method), ("route", route), ("status", str(status))),
        )
        hist_key = ("ociforge_request_duration_seconds", (("route", route),))
        idx = bisect.bisect_left(LATENCY_BUCKETS, latency)
        with self._lock:
            self.counters[count_key] = self.counters.get(count_key, 0.0) + 1.0
            hist = self.hists.get(hist_key)
            if hist is None:
                hist = self.hists[hist_key] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0, 0]
            hist[0][idx] += 1
            hist[1] += latency
            hist[2] += 1
            self.version += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of everything (written to the shared directory)."""
        with self._lock:
            return {
                "pid": os.getpid(),
                "meta": {k: [v[0], v[1], list(v[2])] for k, v in self.meta.items()},
                "counters": [[n, [list(p) for p in lb], v] for (n, lb), v in self.counters.items()],
                "gauges": [[n, [list(p) for p in lb], v] for (n, lb), v in self.gauges.items()],
                "hists": [
                    [n, [list(p) for p in lb], list(h[0]), h[1], h[2]]
                    for (n, lb), h in self.hists.items()
                ],
            }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge(snapshots: list[dict[str, Any]], own_pid: int) -> dict[str, Any]:
    """Sum snapshots from several processes into one (gauges only from live ones)."""
    meta: dict[str, list[Any]] = {}
    counters: dict[tuple[str, Labels], float] = {}
    gauges: dict[tuple[str, Labels], float] = {}
    hists: dict[tuple[str, Labels], list[Any]] = {}
    for snap in snapshots:
        for name, m in snap.get("meta", {}).items():
            meta.setdefault(name, m)
        for name, lb, value in snap.get("counters", []):
            key = (name, tuple(tuple(p) for p in lb))
            counters[key] = counters.get(key, 0.0) + value
        live = snap.get("pid") == own_pid or _alive(int(snap.get("pid", 0)))
        for name, lb, value in snap.get("gauges", []) if live else []:
            key = (name, tuple(tuple(p) for p in lb))
            gauges[key] = gauges.get(key, 0.0) + value
        for name, lb, counts, total, count in snap.get("hists", []):
            key = (name, tuple(tuple(p) for p in lb))
            hist = hists.get(key)
            if hist is None or len(hist[0]) != len(counts):
                hists[key] = [list(counts), total, count]
            else:
                hist[0] = [a + b for a, b in zip(hist[0], counts, strict=True)]
                hist[1] += total
                hist[2] += count
    return {"meta": meta, "counters": counters, "gauges": gauges, "hists": hists}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(str(v))}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def render(merged: dict[str, Any]) -> str:
    """Prometheus text exposition format 0.0.4."""
    by_name: dict[str, list[str]] = {}
    for (name, lb), value in sorted(merged["counters"].items()):
        by_name.setdefault(name, []).append(f"{name}{_labels(lb)} {_num(value)}")
    for (name, lb), value in sorted(merged["gauges"].items()):
        by_name.setdefault(name, []).append(f"{name}{_labels(lb)} {_num(value)}")
    for (name, lb), (counts, total, count) in sorted(merged["hists"].items()):
        buckets = list(merged["meta"].get(name, ["histogram", "", []])[2])
        lines = by_name.setdefault(name, [])
        cumulative = 0
        for bound, n in zip([*buckets, "+Inf"], counts, strict=False):
            cumulative += n
            le = bound if bound == "+Inf" else _num(bound)
            bucket_labels = _labels(lb, 'le="' + le + '"')
            lines.append(f"{name}_bucket{bucket_labels} {cumulative}")
        lines.append(f"{name}_sum{_labels(lb)} {_num(total)}")
        lines.append(f"{name}_count{_labels(lb)} {count}")
    out = []
    for name in sorted(by_name):
        kind, help_text = merged["meta"].get(name, ["untyped", ""])[:2]
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(by_name[name])
    return "\n".join(out) + "\n"


class Exporter:
    """Shares one worker's registry with its siblings through snapshot files."""

    def __init__(self, registry: Registry, directory: str | None, interval_s: float = 1.0) -> None:
        self.registry = registry
        self.directory = directory
        self.interval_s = interval_s
        self._written = -1
        self._stop = threading.Event()
        if directory:
            threading.Thread(target=self._loop, name="ociforge-metrics", daemon=True).start()

    def _path(self, pid: int) -> str:
        return os.path.join(self.directory or "", f"worker-{pid}.json")

    def flush(self) -> None:
        """Write this worker's snapshot if it changed (atomic rename: readers never see half)."""
        if not self.directory or self.registry.version == self._written:
            return
        version = self.registry.version
        data = json.dumps(self.registry.snapshot()).encode()
        path = self._path(os.getpid())
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            self._written = version
        except OSError:
            pass  # metrics must never take the server down

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        self.flush()

    def collect(self) -> str:
        """Render this worker's live numbers plus every other worker's last snapshot."""
        own = os.getpid()
        snaps = [self.registry.snapshot()]
        if self.directory:
            try:
                names = os.listdir(self.directory)
            except OSError:
                names = []
            for fname in names:
                if not (fname.startswith("worker-") and fname.endswith(".json")):
                    continue
                if fname == f"worker-{own}.json":
                    continue
                try:
                    with open(os.path.join(self.directory, fname), "rb") as fh:
                        snaps.append(json.loads(fh.read()))
                except (OSError, ValueError):
                    continue
        return render(merge(snaps, own))


def record_model_metrics(registry: Registry, items: Any) -> None:
    """Apply a Seldon-style ``metrics()`` result: COUNTER adds, GAUGE sets, TIMER (ms) observes."""
    if not isinstance(items, (list, tuple)):
        return
    for item in items:
        if not isinstance(item, dict) or "key" not in item or "value" not in item:
            continue
        kind = str(item.get("type", "COUNTER")).upper()
        name = metric_name(f"ociforge_model_{item['key']}")
        tags = item.get("tags") or {}
        labels = tuple(sorted((metric_name(str(k)), str(v)) for k, v in tags.items()))
        try:
            value = float(item["value"])
        except (TypeError, ValueError):
            continue
        if kind == "GAUGE":
            registry.describe(name, "gauge", f"model gauge {item['key']}")
            registry.set(name, value, labels)
        elif kind == "TIMER":
            registry.describe(name, "histogram", f"model timer {item['key']} (ms)", MS_BUCKETS)
            registry.observe(name, value, labels)
        else:
            registry.describe(name, "counter", f"model counter {item['key']}")
            registry.inc(name, labels, value)
