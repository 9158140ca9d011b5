"""A content-addressed blob store: ``ROOT/blobs/sha256/<hex>``, the same shape as an OCI layout.

Blobs land by atomic rename after their digest is known (and checked, when one was announced) and
their bytes are on disk (fsync), so a reader never sees a partial blob and an interrupted write
leaves nothing behind. A blob already present is not written again. The local cache and every
OCI layout ociforge writes are stores, and several processes may write one at once: a staging
file (``.tmp/blob-*``) is locked by its writer until it is published, so the staging files a
killed writer left are told apart and removed when the store is next opened.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import DigestMismatch, InvalidInput, NotFound
from ..fsutil import remove_stale, staging_file
from .digest import HashingWriter, copy_stream, hex_of, validate

STAGING_PREFIX = "blob-"


class BlobWriter:
    """A file being written into the store; :meth:`commit` makes it visible under its digest."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        # locked until published or removed: a sweeper leaves it alone while this writer lives
        fd, self._tmp = staging_file(store.tmp_dir, STAGING_PREFIX)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self._hasher = HashingWriter(self._file)
        self.digest = ""
        self.size = 0

    def write(self, data) -> int:
        return self._hasher.write(data)

    def tell(self) -> int:
        return self._hasher.size

    def flush(self) -> None:
        self._file.flush()

    def commit(self, expected: str | None = None) -> str:
        """Check against ``expected`` (when given), fsync, rename into place, and close (the
        staging file stays locked until it is in place, so no sweeper can take it)."""
        self.digest, self.size = self._hasher.digest, self._hasher.size
        try:
            if expected is not None and self.digest != validate(expected):
                self._tmp.unlink(missing_ok=True)
                raise DigestMismatch(f"blob hashes to {self.digest}, expected {expected}; not kept")
            dest = self._store.path(self.digest)
            if dest.exists():
                self._tmp.unlink(missing_ok=True)
            else:
                self._file.flush()
                if self._store.durable:
                    os.fsync(self._file.fileno())
                os.fchmod(self._file.fileno(), 0o644)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._tmp, dest)
        finally:
            self._file.close()
        return self.digest

    def abort(self) -> None:
        if not self._file.closed:  # removed while still locked, then closed
            self._tmp.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            self._file.close()


class BlobStore:
    """Blobs by digest under ``root``; safe for several writers at once (rename is atomic).

    ``durable=False`` skips the fsync before publishing, for a store that is itself staging
    (the layout an archive is made from, removed once the archive is in place).
    """

    def __init__(self, root: str | os.PathLike, *, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        self.blob_dir = self.root / "blobs" / "sha256"
        # Temporary files live beside, not inside, blobs/: an OCI layout's blobs/ holds only blobs.
        self.tmp_dir = self.root / ".tmp"
        try:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InvalidInput(f"cannot write to {self.root}: {e.strerror or e}") from None
        remove_stale(self.tmp_dir, STAGING_PREFIX + r".+")

    def path(self, digest: str) -> Path:
        return self.blob_dir / hex_of(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in {self.root}") from None

    @contextlib.contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """``with store.writer() as w: w.write(...); w.commit()`` — aborted on any exception."""
        w = BlobWriter(self)
        try:
            yield w
        except BaseException:
            w.abort()
            raise
        if not w.digest:
            w.abort()

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        with self.writer() as w:
            w.write(data)
            return w.commit(expected)

    def put_stream(self, src: BinaryIO, expected: str | None = None) -> str:
        """Copy a stream in chunks; with ``expected`` the blob is kept only if it matches."""
        if expected is not None and self.has(expected):
            return expected
        with self.writer() as w:
            copy_stream(src, w)
            return w.commit(expected)

    def cleanup(self) -> None:
        """Remove the temporary folder when nothing is being written (layouts stay clean)."""
        with contextlib.suppress(OSError):
            self.tmp_dir.rmdir()

    def read_bytes(self, digest: str) -> bytes:
        """Whole-blob read, for small JSON blobs (manifests, configs) only."""
        with self.open_blob(digest) as f:
            return f.read()
