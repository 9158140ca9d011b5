"""Where blobs were last seen: which repositories of a registry hold a digest (skopeo's
blob-info cache plays the same part).

A push records every blob it leaves in a repository; a later push of another image that shares
those blobs (a model on the same base, to another repository of the same registry) then asks the
registry to mount them from there instead of uploading them again, even when the image was built
locally and never pulled. A stale entry costs nothing: a refused mount becomes an upload.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from ...cachedir import default_cache_dir

_SCHEMA = """
create table if not exists seen (
    registry text not null, repository text not null, digest text not null, at real not null,
    primary key (registry, repository, digest)
)
"""


def _path() -> Path:
    return default_cache_dir() / "blob-locations.sqlite"


@contextlib.contextmanager
def _db():
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    try:
        con.execute("pragma journal_mode=wal")
        con.execute(_SCHEMA)
        yield con
        con.commit()
    finally:
        con.close()


def record(registry: str, repository: str, digests: Iterable[str]) -> None:
    """Remember that ``repository`` on ``registry`` holds ``digests``."""
    now = time.time()
    rows = [(registry, repository, d, now) for d in digests]
    if not rows:
        return
    with contextlib.suppress(sqlite3.Error, OSError), _db() as con:  # a cache: never fail a push
        con.executemany("insert or replace into seen values (?, ?, ?, ?)", rows)


def repositories(registry: str, digest: str, limit: int = 3) -> list[str]:
    """Repositories of ``registry`` known to hold ``digest``, most recently seen first."""
    try:
        with _db() as con:
            cur = con.execute(
                "select repository from seen where registry = ? and digest = ? order by at desc limit ?",
                (registry, digest, limit),
            )
            return [row[0] for row in cur.fetchall()]
    except (sqlite3.Error, OSError):
        return []
