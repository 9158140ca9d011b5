"""Wheels cached by sha256, shared by every build and every target.

    fetch(lock, cache=None, settings=None, offline=False) -> [Path, ...]   # in lock order

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

import hashlib
import logging
import os
import tempfile
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ..cachedir import default_cache_dir
from ..errors import DigestMismatch, InvalidInput, NotFound
from ..oci.digest import CHUNK
from .lock import Lock, LockedWheel
from .resolve import pip_index_settings

log = logging.getLogger(__name__)


def _redact(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    if p.username or p.password:
        host = p.hostname or ""
        return urllib.parse.urlunsplit((p.scheme, f"****@{host}", p.path, "", ""))
    return url


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


class WheelCache:
    """A directory of wheels by sha256; safe for several processes at once (atomic renames)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "wheels"
        self.tmp = self.root / ".tmp"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InvalidInput(f"cannot write to wheel cache {self.root}: {e.strerror}") from None
        self.stats = FetchStats()

    def path_for(self, wheel: LockedWheel) -> Path:
        sha = wheel.sha256
        if "/" in wheel.filename or wheel.filename.startswith("."):
            raise InvalidInput(f"lock: invalid wheel file name {wheel.filename!r}")
        return self.root / sha[:2] / sha / wheel.filename

    def cached(self, wheel: LockedWheel) -> Path | None:
        """The cached file when present and still matching its sha256, else None."""
        path = self.path_for(wheel)
        if not path.is_file():
            return None
        if sha256_file(path) != wheel.sha256:
            log.warning("cached %s no longer matches its sha256; dropping it", wheel.filename)
            path.unlink(missing_ok=True)
            return None
        return path

    def get(
        self,
        wheel: LockedWheel,
        session=None,
        cert: str | None = None,
        credentials: dict | None = None,
        offline: bool = False,
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
        return self._download(wheel, session, cert, credentials or {})

    def _download(self, wheel: LockedWheel, session, cert, credentials) -> Path:
        dest = self.path_for(wheel)
        fd, tmpname = tempfile.mkstemp(prefix=".dl-", dir=self.tmp)
        tmp = Path(tmpname)
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._stream(wheel.url, session, cert, credentials):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            if h.hexdigest() != wheel.sha256:
                raise DigestMismatch(
                    f"{wheel.filename} from {_redact(wheel.url)} hashes to sha256:{h.hexdigest()}, "
                    f"the lock says sha256:{wheel.sha256}; not kept"
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.stats.downloaded += 1
        self.stats.downloaded_bytes += size
        self.stats.names.append(wheel.filename)
        log.info("fetched %s (%d bytes)", wheel.filename, size)
        return dest

    @staticmethod
    def _stream(url: str, session, cert, credentials):
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
                yield from r.iter_content(CHUNK)
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
    cache = cache or WheelCache()
    wheels = lock.packages if isinstance(lock, Lock) else list(lock)
    missing = [w for w in wheels if not cache.path_for(w).is_file()]
    cert, creds, session = None, {}, None
    if missing and not offline:
        if settings is None:
            settings = pip_index_settings()
        cert, creds = settings.cert, settings.credentials()
        session = requests.Session()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        futures = [ex.submit(cache.get, w, session, cert, creds, offline) for w in wheels]
        return [f.result() for f in futures]
