"""Models used by the runtime tests.

The conftest registers this module with ``cloudpickle.register_pickle_by_value``
so the packages written from it load in a server process that cannot import
the tests, exactly like a model defined in a user's ``__main__``.
"""

from __future__ import annotations

import os
import threading
import time


def echo(x):
    """Function model: reports what it received, so tests can check decoding."""
    if isinstance(x, (bytes, bytearray)):
        return {"type": "bytes", "len": len(x), "head": bytes(x[:8]).hex()}
    if isinstance(x, str):
        if x == "boom":
            raise ValueError("the model exploded on purpose")
        if x.startswith("spin:"):  # busy in Python bytecode: interruptible
            end = time.monotonic() + float(x.split(":", 1)[1])
            while time.monotonic() < end:
                pass
            return {"type": "str", "spun": True}
        if x.startswith("sleep:"):  # blocked in one C call
            time.sleep(float(x.split(":", 1)[1]))
            return {"type": "str", "slept": True}
        return {"type": "str", "value": x}
    if isinstance(x, dict) and "id" in x and "delay" in x:
        time.sleep(x["delay"])
        return {"id": x["id"]}
    if isinstance(x, dict):
        return {"type": "dict", "keys": sorted(x), "value": {k: _plain(v) for k, v in x.items()}}
    if hasattr(x, "dtype"):  # numpy array from the v2 route
        if x.dtype.kind in "OUS":
            return [s.upper() for s in x.ravel().tolist()]
        return x * 2
    return {"type": type(x).__name__, "value": x}


def _plain(v):
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": len(v)}
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def unserialisable(x):
    """Returns something JSON cannot encode: the server must answer 500, not crash."""
    return object()


def batch_double(xs):
    """Batch model: logs each call's size to a file named by an env var, doubles each input."""
    log = os.environ.get("BATCH_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{len(xs)}\n")
    time.sleep(0.05)  # long enough that concurrent requests pile up
    return [{"input": x, "double": x * 2} for x in xs]


def batch_wrong_length(xs):
    return xs[:-1]


class SlowLoad:
    """Class model whose load() takes a while, so readiness can be observed."""

    def load(self):
        time.sleep(float(os.environ.get("LOAD_SECONDS", "2")))
        self.loaded_at = time.time()

    def predict(self, x):
        return {"loaded": True, "x": x}


class FailingLoad:
    """Class model whose load() raises: the container must exit non-zero."""

    def load(self):
        raise RuntimeError("weights file missing: /nowhere/weights.bin")

    def predict(self, x):
        return x


class Counting:
    """Class model: load() must run once per worker; counts concurrent predicts."""

    def __init__(self):
        self.loads = 0
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def load(self):
        self.loads += 1

    def predict(self, x):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(x.get("sleep", 0) if isinstance(x, dict) else 0)
            return {"loads": self.loads, "max_active": self.max_active, "pid": os.getpid()}
        finally:
            with self.lock:
                self.active -= 1


class Seldon:
    """Seldon-style object: predict(X), tags() and metrics()."""

    def __init__(self):
        self.calls = 0

    def predict(self, X):
        self.calls += 1
        return [sum(row) for row in X]

    def tags(self):
        return {"model": "seldon", "calls": self.calls}

    def metrics(self):
        return [
            {"type": "COUNTER", "key": "rows_seen", "value": 1},
            {"type": "GAUGE", "key": "last_calls", "value": self.calls},
            {"type": "TIMER", "key": "fake_ms", "value": 12.5},
        ]


def tagged_request(x):
    """Records every request id it starts to a file, for the SIGTERM test."""
    log = os.environ.get("SEEN_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{x['id']}\n".encode())
        os.close(fd)
    time.sleep(x.get("delay", 0))
    return {"id": x["id"]}


def small_json(x):
    """The load-test model: a small JSON prediction."""
    return {"score": sum(x.get("features", [])) / 10.0, "label": "ok"}


def describe(x):
    """Fuzzing model: a small JSON-safe description of whatever input it received."""
    if isinstance(x, dict):
        return {"type": "dict", "keys": sorted(str(k) for k in x)}
    if isinstance(x, (list, tuple)):
        return {"type": "list", "len": len(x)}
    if isinstance(x, (bytes, bytearray)):
        return {"type": "bytes", "len": len(x)}
    if isinstance(x, str):
        return {"type": "str", "len": len(x)}
    if hasattr(x, "dtype"):
        return {"type": "array", "shape": list(x.shape), "dtype": str(x.dtype)}
    return {"type": type(x).__name__}
