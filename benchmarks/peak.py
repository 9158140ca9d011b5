"""Run a command and report its wall time and the peak memory of its largest process, as JSON.

    python -m benchmarks.peak -- CMD [ARGS...]     → {"seconds": 12.3, "peak_kib": 456789, "rc": 0}

Why a wrapper: ``ru_maxrss`` survives ``exec``, so a child forked from the big benchmark process
would report the parent's size. Forked from this small interpreter instead, the children's
``RUSAGE_CHILDREN`` maximum is theirs (the largest single process of the tree: buildah's RUN
steps are reaped through buildah, so pip inside counts). The command's own output is passed
through to stderr; only the JSON goes to stdout.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    t0 = time.perf_counter()
    rc = subprocess.call(argv, stdout=sys.stderr)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "rc": rc}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
