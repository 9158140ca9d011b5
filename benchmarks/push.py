"""Row 6: pushing the built multi-arch image to a local ``docker-registry``, against
``skopeo copy --all`` of the same OCI layout to another repository, fresh and again unchanged.
Each round starts a fresh registry (see :func:`benchmarks.push_bench.measure`)."""

from __future__ import annotations

from pathlib import Path

from .push_bench import measure
from .stats import Row, Sample


def rows(layout: Path, tag: str, rounds: int, workdir: Path) -> list[Row]:
    got = measure(layout, tag, rounds, workdir)
    t, sent = got["times"], got["sent"]
    mb = got["total"] / 1e6
    return [
        Row(
            f"6. push, amd64 + arm64, {mb:.0f} MB",
            Sample(t["ociforge"]),
            "skopeo copy --all (same layout)",
            Sample(t["skopeo"]),
            "<= 1.0x",
            1.0,
            note=f"{sent['ociforge'] / 1e6:.0f} MB sent",
            baseline_kind="tool",
        ),
        Row(
            "6. re-push unchanged",
            Sample(t["ociforge again"]),
            "skopeo copy --all again",
            Sample(t["skopeo again"]),
            "<= 1.0x, 0 bytes",
            1.0,
            note=f"{sent['ociforge again']} blob bytes sent",
            extra={"bytes_sent": sent["ociforge again"]},
            baseline_kind="tool",
        ),
    ]
