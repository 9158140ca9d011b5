"""Rows 11 and 12: what the serving protocols cost, on one server and model (#18).

* 11: OIP v2 infer with a 1 MB FP32 input, the binary tensor extension against JSON ``data``
  (same server, one keep-alive connection, sequential, interleaved rounds).
* 12: OIP v2 over gRPC (raw contents) against REST (JSON), same server, a small and a 1 MB input.

Both run the runtime from this checkout (``python -m ociforge_runtime`` on a model package), as
:mod:`benchmarks.runtime_bench` does standalone; here they become table rows with a ratio. No
target is set: these rows say what a client gains by switching protocol, not how ociforge
compares with another tool.
"""

from __future__ import annotations

import tempfile
from types import SimpleNamespace

from . import runtime_bench
from .stats import Row, Sample


def rows(quick: bool, log) -> list[Row]:
    args = SimpleNamespace(
        workers=1,
        threads=8,
        binary_rounds=2 if quick else 6,
        grpc_rounds=2 if quick else 4,
        grpc_duration=1.5 if quick else 2.0,
        grpc_clients=4,
    )
    out: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ociforge-bench-proto-") as tmp:
        log("protocols (11): binary tensors vs JSON, 1 MB FP32")
        enc = {r["encoding"]: r for r in runtime_bench.binary_vs_json(args, tmp)}
        binary, js = enc["binary extension"], enc["JSON data"]
        out.append(
            Row(
                "11. OIP v2 infer, 1 MB FP32 input, requests/s",
                Sample([1 / t for t in binary["_seconds"]], "rps"),
                "the same server, JSON `data`",
                Sample([1 / t for t in js["_seconds"]], "rps"),
                higher_is_better=True,
                note=f"binary tensor extension ({binary['body_MB']} MB body) vs JSON "
                f"({js['body_MB']} MB body); one keep-alive connection, sequential",
                baseline_kind="ociforge",
            )
        )
        log("protocols (12): gRPC vs REST")
        by = {(r["input"], r["protocol"]): r for r in runtime_bench.grpc_vs_rest(args, tmp)}
        for label in ("1x4 FP32", "1 MB FP32"):
            grpc_, rest = by[(label, "gRPC (raw)")], by[(label, "REST (JSON)")]
            out.append(
                Row(
                    f"12. OIP v2 gRPC, {label} input, requests/s",
                    Sample(grpc_["_rps"], "rps"),
                    "the same server over REST (JSON)",
                    Sample(rest["_rps"], "rps"),
                    higher_is_better=True,
                    note=f"{args.grpc_clients} sequential clients; p99 {grpc_['p99_ms']} ms vs "
                    f"{rest['p99_ms']} ms; errors {grpc_['errors']} / {rest['errors']}",
                    baseline_kind="ociforge",
                )
            )
    return out
