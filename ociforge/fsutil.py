"""Writing small files so that readers see the old content or the new, never half of it; the
locks that let several processes write one folder at once; and the sweeping of what a killed
writer left behind.

Every staging file is made by :func:`staging_file`, which holds an exclusive ``flock`` on it
until it is renamed into place (or removed). A staging file that nobody holds a lock on belongs
to no live writer (the kernel drops a dead process's locks, SIGKILL included), so
:func:`remove_stale` can remove it at once, with no age guess, and never touches a live one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InvalidInput

_STAGING_TRIES = 20


def atomic_write(
    path: str | os.PathLike, data: bytes | str, mode: int = 0o644, *, mkdir: bool = False
) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, and rename it into place.

    ``mode`` is set before the rename (0600 for credentials). ``mkdir`` creates missing parents.
    A folder that cannot be written is an :class:`InvalidInput` naming it.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        if mkdir:
            parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = staging_file(parent, f".{path.name}.")
    except OSError as e:
        raise InvalidInput(f"cannot write to {parent}: {e.strerror or e}") from None
    # renamed while still open (and locked): a sweeper never sees it unlocked before it is in place
    with os.fdopen(fd, "wb") as f:
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


def staging_file(folder: str | os.PathLike, prefix: str) -> tuple[int, Path]:
    """A new file in ``folder`` (``mkstemp``), opened for writing and exclusively ``flock``-ed
    by the returned descriptor, which the caller closes once the file is renamed or removed.

    A file a sweeper removed between its creation and the lock is noticed (no links left) and
    replaced by a new one; a folder removed meanwhile (an emptied ``.tmp``) is made again.
    """
    folder = Path(folder)
    for _ in range(_STAGING_TRIES):
        try:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=folder)
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, Path(name)
        os.close(fd)
    raise OSError(errno.EAGAIN, f"cannot create a staging file in {folder}")


def remove_stale(folder: str | os.PathLike, pattern: str) -> int:
    """Remove the staging files in ``folder`` whose names match ``pattern`` (a regular
    expression, matched whole) and that no live writer holds a lock on; returns how many."""
    name_re = re.compile(pattern)
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not name_re.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # renamed into place or removed meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            held, now = os.fstat(fd), os.lstat(entry.path)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``lock_path`` (created if needed) for the block;
    the file is removed when the block ends, so nothing is left behind.

    Removing a lock file safely: it is removed only by its holder, and a process that waited on
    a file that was removed meanwhile (the path now names another file, or none) tries again.
    """
    lock_path = Path(lock_path)
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise InvalidInput(f"cannot lock {lock_path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(lock_path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)
