"""Writing small files so that readers see the old content or the new, never half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InvalidInput


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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    except OSError as e:
        raise InvalidInput(f"cannot write to {parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
