"""The build's side of the registry cache (:mod:`ociforge.cache`): what lets a build whose layers
are all in the cache read no wheel at all.

- :class:`LazyWheels`: a platform's wheel files, fetched only when something opens one (a wheel
  layer, the bytecode or the library check that missed), not before the build starts.
- :func:`check_libraries`: the library check (:mod:`ociforge.builder.libraries`) remembered by
  what it reads (the target, the wheels' sha256s, the base's layers, the startup roots): a check
  that passed once for the same inputs prints its warnings again and reads nothing.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import InvalidInput
from ..fsutil import atomic_write
from ..oci.blobstore import BlobStore
from ..oci.image import Image
from ..oci.layercache import memo_key
from ..python.lock import Lock
from ..python.target import Target
from . import libraries


class LazyWheels(Sequence[Path]):
    """``fetch(lock)``, on first use (thread-safe): a build that needs no wheel downloads none."""

    def __init__(self, fetch: Callable[[], list[Path]]) -> None:
        self._fetch = fetch
        self._paths: list[Path] | None = None
        self._lock = threading.Lock()

    def _get(self) -> list[Path]:
        with self._lock:
            if self._paths is None:
                self._paths = list(self._fetch())
            return self._paths

    @property
    def fetched(self) -> bool:
        return self._paths is not None

    def __iter__(self) -> Iterator[Path]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __getitem__(self, i):
        return self._get()[i]


def _check_key(
    target: Target, lock: Lock, base: Image, roots: list[str], offline: bool, provided
) -> str:
    return memo_key(
        "library-check",
        target.to_json(),
        sorted(w.sha256 for w in lock.packages),
        [d.digest for d in base.layers],
        sorted(roots),
        offline,
        provided.to_json() if provided is not None else None,
    )


def _local(store: BlobStore, key: str) -> Path:
    return store.root / "checks" / key[:2] / f"{key}.json"


def check_libraries(
    target: Target,
    lock: Lock,
    wheel_files: Sequence[Path],
    base: Image,
    roots: Iterable[str],
    *,
    offline: bool,
    store: BlobStore,
    memo=None,
    provided=None,
) -> None:
    """:func:`ociforge.builder.libraries.check_libraries`, or the lines it printed when it last
    passed for the same inputs (here, else in the build's cache ``memo``)."""
    roots = list(roots)
    key = _check_key(target, lock, base, roots, offline, provided)
    lines = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        lines = [str(x) for x in json.loads(_local(store, key).read_text())["lines"]]
    if lines is None and memo is not None:
        lines = memo.check(key)
    if lines is None:
        said: list[str] = []

        def warn(line: str) -> None:
            said.append(line)
            print(line, file=sys.stderr)

        kw = {"provided": provided} if provided is not None else {}
        libraries.check_libraries(
            target, lock, list(wheel_files), base, roots, offline=offline, warn=warn, **kw
        )  # raises when the check fails: nothing is remembered then
        with contextlib.suppress(OSError, InvalidInput):
            atomic_write(_local(store, key), json.dumps({"lines": said}), mkdir=True)
        lines = said
    else:
        for line in lines:
            print(line, file=sys.stderr)
    if memo is not None:
        memo.note_check(key, lines)
