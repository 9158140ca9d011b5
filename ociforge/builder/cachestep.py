"""The build's side of the registry cache (:mod:`ociforge.cache`): what lets a build whose layers
are all in the cache read no wheel at all.

- :class:`LazyWheels`: a platform's wheel files, fetched only when something opens one (a wheel
  layer, the bytecode or the library check that missed), not before the build starts.
- :func:`check_libraries`: the library check (:mod:`ociforge.builder.libraries`) remembered by
  what it reads (the target, the wheels' sha256s, the base's layers, the startup roots): a check
  that passed once for the same inputs prints its warnings again and reads nothing. One that
  did not reads each wheel's facts from a record keyed by its sha256 (:func:`wheel_facts`), and
  only the wheels no record knows.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

from packaging.utils import canonicalize_name

from ..cache import records
from ..errors import InvalidInput
from ..fsutil import atomic_write
from ..oci.blobstore import BlobStore
from ..oci.image import Image
from ..oci.layercache import memo_key
from ..python.lock import Lock, LockedWheel
from ..python.target import Target
from . import libraries


class LazyWheels(Sequence[Path]):
    """A lock's wheel files (in the lock's order), each fetched only when something asks for it
    (thread-safe): :meth:`only` fetches the wheels named, iterating fetches them all. A build
    that needs no wheel downloads none; a dependency change downloads the new wheels.

    Each wheel is fetched once, by the first thread that asks; a thread that asks for other
    wheels meanwhile does not wait for it (a layer starts when its own wheels are there).
    ``fetch`` may also just wait for wheels already being fetched
    (:class:`ociforge.python.wheelcache.Fetching`, then ``cancel`` is its own)."""

    def __init__(
        self,
        wheels: Sequence[LockedWheel],
        fetch: Callable[[list[LockedWheel]], list[Path]],
        cancel: Callable[[], None] | None = None,
    ) -> None:
        self._wheels = list(wheels)
        self._fetch = fetch
        self._cancel = cancel
        self._paths: dict[str, Future] = {}  # by sha256: the wheel's file, once fetched
        self._lock = threading.Lock()

    def only(self, wheels: Iterable[LockedWheel]) -> list[Path]:
        """The files of ``wheels``, fetching those no one fetched or is fetching yet."""
        wheels = list(wheels)
        with self._lock:
            mine = list({w.sha256: w for w in wheels if w.sha256 not in self._paths}.values())
            made: dict[str, Future] = {w.sha256: Future() for w in mine}
            self._paths.update(made)
            waits = [self._paths[w.sha256] for w in wheels]
        if mine:
            try:
                got = self._fetch(mine)
            except BaseException as e:
                with self._lock:  # the next to ask tries again, as before
                    for w in mine:
                        del self._paths[w.sha256]
                for w in mine:
                    made[w.sha256].set_exception(e)
                raise
            for w, p in zip(mine, got, strict=True):
                made[w.sha256].set_result(Path(p))
        return [f.result() for f in waits]

    def cancel(self) -> None:
        """Drop the fetches not started yet (the build failed): ``cancel`` as given."""
        if self._cancel is not None:
            self._cancel()

    @property
    def fetched(self) -> bool:
        """Whether every wheel was fetched."""
        with self._lock:
            return all(
                w.sha256 in self._paths and self._paths[w.sha256].done()
                and self._paths[w.sha256].exception() is None
                for w in self._wheels
            )  # fmt: skip

    def _get(self) -> list[Path]:
        return self.only(self._wheels)

    def __iter__(self) -> Iterator[Path]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._wheels)

    def __getitem__(self, i):
        return self._get()[i]


def wheel_paths(
    wheel_files: Sequence[Path], lock: Lock, wheels: Iterable[LockedWheel]
) -> list[Path]:
    """The files of some of ``lock``'s ``wheels``: fetched alone from a :class:`LazyWheels`,
    else taken from ``wheel_files`` (the lock's files, in its order)."""
    if isinstance(wheel_files, LazyWheels):
        return wheel_files.only(wheels)
    by_sha = {w.sha256: Path(p) for w, p in zip(lock.packages, wheel_files, strict=True)}
    return [by_sha[w.sha256] for w in wheels]


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


def _facts_key(wheel: LockedWheel) -> str:
    return memo_key("wheel-facts", wheel.sha256, libraries.FACTS_FORMAT)


def wheel_facts(
    lock: Lock, wheel_files: Sequence[Path], store: BlobStore
) -> dict[str, libraries.WheelFacts]:
    """Every wheel's files and ELF facts (by normalized name), each a record keyed by the
    wheel's sha256 (:mod:`ociforge.cache.records`): only the wheels no record knows are read,
    so a check over a lock with one new wheel on a fresh runner downloads that wheel alone."""
    facts: dict[str, libraries.WheelFacts] = {}
    unknown: list[LockedWheel] = []
    for w in lock.packages:
        found = records.recall(store, _facts_key(w), libraries.facts_from_json)
        if found is None:
            unknown.append(w)
        else:
            facts[canonicalize_name(w.name)] = found
    for w, path in zip(unknown, wheel_paths(wheel_files, lock, unknown), strict=True):
        got = libraries.facts_of(path, w.sha256)
        records.keep(store, _facts_key(w), libraries.facts_json(got))
        facts[canonicalize_name(w.name)] = got
    return {w: facts[w] for w in sorted(facts)}


def _local(store: BlobStore, key: str) -> Path:
    return store.root / "checks" / key[:2] / f"{key}.json"


def scan_base(base: Image) -> None:
    """The base's file list read into the cache now (:func:`ociforge.bases.basefiles.base_files`),
    while the build waits on the resolver, so that the library check later finds it (a base's
    first check scanned its layers: about a third of a cold build's check). A failure is left
    for the check itself to report."""
    with contextlib.suppress(Exception):
        libraries.base_files(base)


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
        facts = wheel_facts(lock, wheel_files, store)
        libraries.check_libraries(
            target, lock, [], base, roots, offline=offline, warn=warn, facts=facts, **kw
        )  # raises when the check fails: nothing is remembered then
        with contextlib.suppress(OSError, InvalidInput):
            atomic_write(_local(store, key), json.dumps({"lines": said}), mkdir=True)
        lines = said
    else:
        for line in lines:
            print(line, file=sys.stderr)
        if memo is not None:  # a fresh runner's miss (a new wheel) needs the others' facts
            records.share(store, [_facts_key(w) for w in lock.packages])
    if memo is not None:
        memo.note_check(key, lines)
