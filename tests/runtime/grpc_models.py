"""Models for the gRPC tests (pickled by value, like runtime_models)."""

from __future__ import annotations

import time


def affine(x):
    """2x + 1 on float32; works on a list (``/predict``, the local path) or an array (v2)."""
    import numpy as np

    return np.asarray(x, dtype=np.float32) * 2 + 1


def mixed(x):
    """Several inputs -> several outputs; BYTES elements are upper-cased (bytes in, bytes out)."""
    import numpy as np

    if isinstance(x, dict):
        a = np.asarray(x["a"])
        b = np.asarray(x["b"])
        return {"sum": a + b, "prod": a * b}
    if x.dtype.kind == "O":
        out = np.empty(x.shape, dtype=object)
        out.ravel()[:] = [
            v.upper() if isinstance(v, bytes) else v.encode().upper() for v in x.ravel()
        ]
        return out
    if x.dtype.kind == "f" and x.size and x.ravel()[0] < 0:
        raise ValueError("negative on purpose")
    return x * 3


def slow(x):
    """Sleeps x[0] seconds, then answers x."""
    time.sleep(float(x.ravel()[0]))
    return x
