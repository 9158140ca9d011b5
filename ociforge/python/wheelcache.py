"""Wheels cached by sha256, shared by every build and every target.

    fetch(lock, cache=None, settings=None, offline=False) -> [Path, ...]   # in lock order
    Fetching(wheels, ...).paths(some)     # in the background, biggest first; wait for ``some``

A wheel lives at ``CACHE/wheels/<sha[:2]>/<sha256>/<filename>``: keyed by content, so a pure-
Python wheel locked for amd64 and for arm64 is the same file, fetched once. The file name is kept
because installers read the wheel's name and tags from it.

Bytes are hashed as they stream in and land by atomic rename only when they match the lock, and a
cached file is hashed again each time it is used (a cache is a disk, and disks rot); a file that
no longer matches is dropped and fetched again, or, offline, reported. Downloads use TLS verified
against pip's ``cert`` (or the system store); credentials come from the user's index settings and
never appear in a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import stat
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ..cachedir import default_cache_dir
from ..errors import DigestMismatch, InvalidInput, NotFound
from ..fsutil import atomic_write, remove_stale, staging_file
from ..oci.digest import CHUNK
from .indexauth import redact_url
from .lock import Lock, LockedWheel
from .resolve import pip_index_settings
from .sdist import build_pure_wheel

log = logging.getLogger(__name__)

# A wheel whose lock gives no size is still bounded: no published wheel comes near this.
MAX_UNSIZED_WHEEL = 8 << 30


def _redact(url: str) -> str:
    return redact_url(url)  # user part (a token too), password and query hidden


def _local_file(url: str) -> bool:
    """True for a ``file://`` URL of a file that exists here."""
    p = urllib.parse.urlsplit(url)
    return p.scheme == "file" and Path(urllib.request.url2pathname(p.path)).is_file()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class FetchStats:
    downloaded: int = 0
    downloaded_bytes: int = 0
    reused: int = 0
    names: list[str] = field(default_factory=list)


def _identity(path: Path, sha256: str) -> str | None:
    """What stands for a hash of the regular file ``path`` while it is unchanged, or None."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return f"{sha256} {st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}\n"


class WheelCache:
    """A directory of wheels by sha256; safe for several processes at once (atomic renames)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "wheels"
        self.tmp = self.root / ".tmp"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InvalidInput(f"cannot write to wheel cache {self.root}: {e.strerror}") from None
        remove_stale(self.tmp, r"\.dl-.+")  # a killed download's (its writer holds no lock)
        self.stats = FetchStats()

    def path_for(self, wheel: LockedWheel) -> Path:
        sha = wheel.sha256
        if "/" in wheel.filename or wheel.filename.startswith("."):
            raise InvalidInput(f"lock: invalid wheel file name {wheel.filename!r}")
        return self.root / sha[:2] / sha / wheel.filename

    def cached(self, wheel: LockedWheel) -> Path | None:
        """The cached file when present and still matching its sha256, else None.

        A file is hashed once: its identity then (inode, size, mtime and ctime, in
        ``.verified/<sha256>``) stands for the hash while none of it changes. Any write to the file
        moves its ctime, which no one can set back, so a changed file is hashed again. (A rebuild
        of a CUDA image spent 6 s of CPU re-hashing 6 GB of wheels whose layers it never wrote.)
        """
        path = self.path_for(wheel)
        ident = _identity(path, wheel.sha256)
        if ident is None:
            return None
        stamp = self.root / ".verified" / wheel.sha256
        try:
            if stamp.read_text() == ident:
                return path
        except (OSError, UnicodeDecodeError):
            pass
        if sha256_file(path) != wheel.sha256:
            log.warning("cached %s no longer matches its sha256; dropping it", wheel.filename)
            path.unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
            return None
        self._remember(wheel, path)
        return path

    def _remember(self, wheel: LockedWheel, path: Path) -> None:
        """Note ``path`` (just hashed to ``wheel.sha256``) as verified, by its identity now."""
        ident = _identity(path, wheel.sha256)
        if ident is not None:
            with contextlib.suppress(InvalidInput, OSError):  # only a hash saved the next time
                atomic_write(self.root / ".verified" / wheel.sha256, ident, mkdir=True)

    def get(
        self,
        wheel: LockedWheel,
        session=None,
        cert: str | None = None,
        credentials: dict | None = None,
        offline: bool = False,
        index_args: list[str] | None = None,
    ) -> Path:
        path = self.cached(wheel)
        if path is not None:
            self.stats.reused += 1
            return path
        if offline:
            raise NotFound(
                f"{wheel.filename} (sha256 {wheel.sha256}) is not in the wheel cache {self.root} "
                f"and the build is offline"
            )
        if wheel.sdist_sha256 and not _local_file(wheel.url):
            # Built from an sdist on the machine that made the lock: build it again here, from
            # the sdist the lock pins (the built wheel is then checked against the lock's hash).
            folder = build_pure_wheel(
                wheel.name, wheel.version, index_args or [], cert, sdist_sha256=wheel.sdist_sha256
            )
            wheel = dataclasses.replace(wheel, url=(folder / wheel.filename).as_uri())
        return self._download(wheel, session, cert, credentials or {})

    def _download(self, wheel: LockedWheel, session, cert, credentials) -> Path:
        dest = self.path_for(wheel)
        fd, tmp = staging_file(self.tmp, ".dl-")  # locked until renamed or removed
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            try:
                limit = wheel.size if wheel.size is not None else MAX_UNSIZED_WHEEL
                for chunk in self._stream(wheel.url, session, cert, credentials, limit):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                if h.hexdigest() != wheel.sha256:
                    raise DigestMismatch(
                        f"{wheel.filename} from {_redact(wheel.url)} hashes to sha256:{h.hexdigest()}, "
                        f"the lock says sha256:{wheel.sha256}; not kept"
                    )
                out.flush()
                os.fsync(out.fileno())
                os.fchmod(out.fileno(), 0o644)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        self._remember(wheel, dest)  # hashed as it came in
        self.stats.downloaded += 1
        self.stats.downloaded_bytes += size
        self.stats.names.append(wheel.filename)
        log.info("fetched %s (%d bytes)", wheel.filename, size)
        return dest

    @staticmethod
    def _stream(url: str, session, cert, credentials, limit: int | None = None):
        """The bytes at ``url``; more than ``limit`` (the lock's size) is cut and refused."""
        if limit is not None:
            got = 0
            for chunk in WheelCache._stream(url, session, cert, credentials):
                got += len(chunk)
                if got > limit:
                    raise DigestMismatch(
                        f"{_redact(url)} sent more than the {limit} bytes the lock gives it; "
                        "cut and not kept"
                    )
                yield chunk
            return
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file":
            path = urllib.request.url2pathname(parts.path)
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        yield chunk
            except OSError as e:
                raise NotFound(f"cannot read {path}: {e.strerror}") from None
            return
        if parts.scheme not in ("http", "https"):
            raise InvalidInput(f"unsupported wheel URL scheme {parts.scheme!r} in {_redact(url)}")
        auth = credentials.get(parts.hostname or "")
        sess = session or requests
        try:
            with sess.get(url, stream=True, timeout=60, verify=cert or True, auth=auth) as r:
                if r.status_code != 200:
                    raise NotFound(f"{_redact(url)}: HTTP {r.status_code}")
                yield from r.iter_content(CHUNK)  # streamed: bounded by the caller's limit
        except requests.RequestException as e:
            raise NotFound(f"cannot download {_redact(url)}: {type(e).__name__}") from None


def fetch(
    lock: Lock | list[LockedWheel],
    cache: WheelCache | None = None,
    settings=None,
    offline: bool = False,
    jobs: int = 4,
) -> list[Path]:
    """Every wheel of ``lock`` as a verified cached file, downloading only what is missing.

    ``settings`` is a :class:`ociforge.python.resolve.IndexSettings` (for the TLS ``cert`` and index
    credentials); by default the user's pip configuration, read only when something must be
    downloaded.
    """
    wheels = lock.packages if isinstance(lock, Lock) else list(lock)
    fetching = Fetching(wheels, cache, settings, offline, jobs)
    try:
        return fetching.paths(wheels)
    finally:
        fetching.join()  # on an error too: nothing is left downloading behind the caller


def _bigger(w: LockedWheel) -> int:
    return -(w.size or 0)


class Fetching:
    """``wheels`` being fetched in the background (``jobs`` at once, biggest first), so that
    whoever needs a few of them waits for those alone: a build writes the layer of its biggest
    wheel while the small ones are still downloading. Errors are :func:`fetch`'s, raised to whoever
    asks for the wheel (see :meth:`paths`). ``first``: wheels to start before the others (a
    multi-platform build's first platform's, biggest first)."""

    def __init__(
        self,
        wheels: list[LockedWheel],
        cache: WheelCache | None = None,
        settings=None,
        offline: bool = False,
        jobs: int = 4,
        first: list[LockedWheel] | None = None,
    ) -> None:
        cache = cache or WheelCache()
        unique = list({w.sha256: w for w in wheels}.values())
        missing = [w for w in unique if not cache.path_for(w).is_file()]
        cert, creds, session, index_args = None, {}, None, []
        if missing and not offline:
            if settings is None:
                settings = pip_index_settings()
            cert, creds = settings.cert, settings.credentials()
            index_args = settings.uv_args()  # to build a wheel again from its pinned sdist
            session = requests.Session()
        self._order = unique  # as given: errors are reported in this order
        pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="ociforge-fetch")
        # ``first`` (some of ``wheels``) in its order, then biggest first: the longest layer
        # starts earliest
        start = list({w.sha256: w for w in [*(first or []), *sorted(unique, key=_bigger)]}.values())
        self._futures: dict[str, Future] = {
            w.sha256: pool.submit(cache.get, w, session, cert, creds, offline, index_args)
            for w in start
        }
        pool.shutdown(wait=False)  # the threads end when the queue is done (or cancelled)

    def paths(self, wheels: list[LockedWheel]) -> list[Path]:
        """The files of ``wheels`` (some of those given), waiting for them. When one of them
        failed, the error raised is that of the first wheel, in the order given, that failed
        (waiting for the others before it), as a :func:`fetch` of them all would raise."""
        futures = [self._futures[w.sha256] for w in wheels]
        wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.done() and not f.cancelled() and f.exception() is not None for f in futures):
            for w in self._order:
                self._futures[w.sha256].result()
        return [f.result() for f in futures]

    def join(self) -> None:
        """Wait until no download is under way."""
        wait(list(self._futures.values()))

    def cancel(self) -> None:
        """Drop the downloads not started yet (a build that failed needs none of them); those
        under way finish (a download is kept only whole and verified)."""
        for f in self._futures.values():
            f.cancel()
