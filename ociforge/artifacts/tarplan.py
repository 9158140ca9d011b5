"""Uncompressed tar layers of big files, hashed and written at the speed of the disk.

An uncompressed tar of files is the files' bytes with a few headers between them, so it is held
here as a *plan*: the header bytes, and ranges of files on disk. The plan gives the layer's
digest (which is its diff_id: nothing is compressed) in one streaming pass that reads each file
once and hashes it (:meth:`TarPlan.measure`), or writes the blob into a store in that same pass
(:meth:`TarPlan.write`); and it opens as a seekable stream (:meth:`TarPlan.open`), so a push
reads the files straight from where they are, resumes a cut upload at any offset, and never
keeps a second copy of a multi-GB file on disk. Memory stays flat (a few MiB of buffers) whatever
the size.

The bytes are exactly what :func:`ociforge.oci.layer.write_tar` writes for the same entries.

A digest found once is remembered under the files' identity (device, inode, size, mtime and
ctime in nanoseconds, which any write to a file changes) and the header bytes, so a rebuild of
unchanged weights reads nothing (``OCIFORGE_WEIGHTS_REHASH=1`` hashes again). A registry would
refuse a blob whose bytes do not match, and a layout checks every blob it copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from ..cachedir import default_cache_dir
from ..errors import InvalidInput, NotFound
from ..fsutil import atomic_write
from ..oci import tarformat
from ..oci.blobstore import BlobStore
from ..oci.layer import Entry, Layer, normalize_entries
from ..oci.manifest import Descriptor

CHUNK = 4 << 20
FORMAT = "1"


@dataclass(frozen=True)
class _Range:
    source: str
    size: int


def file_identity(source: str) -> list:
    """What changes whenever a file's bytes may have: path, device, inode, size, mtime, ctime."""
    try:
        st = os.stat(source)
    except OSError as e:
        raise InvalidInput(f"cannot read {source}: {e.strerror}") from None
    return [
        os.path.abspath(source),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    ]


class TarPlan:
    """An uncompressed tar of ``entries`` (files with ``source``, directories), as pieces."""

    def __init__(self, entries: Iterable[Entry], epoch: int) -> None:
        pieces: list[bytes | _Range] = []
        offset = 0
        buf = bytearray()
        for e in normalize_entries(entries):
            mtime = epoch if e.mtime is None else e.mtime
            own = {"mtime": mtime, "uid": e.uid, "gid": e.gid}
            if e.kind == "dir":
                head = tarformat.header(e.path, tarformat.DIRTYPE, mode=e.mode or 0o755, **own)
                buf += head
                offset += len(head)
                continue
            if e.kind != "file" or e.source is None:
                raise InvalidInput(f"{e.path}: a weights layer holds files from disk only")
            head = tarformat.header(
                e.path, tarformat.REGTYPE, mode=e.mode or 0o644, size=e.size, **own
            )
            buf += head
            if e.size:
                pieces.append(bytes(buf))
                buf = bytearray()
                pieces.append(_Range(e.source, e.size))
            buf += tarformat.padding(e.size)
            offset += len(head) + e.size + len(tarformat.padding(e.size))
        buf += tarformat.end(offset)
        pieces.append(bytes(buf))
        self.pieces = tuple(pieces)
        self.size = sum(len(p) if isinstance(p, bytes) else p.size for p in pieces)
        self._digest: str | None = None

    @classmethod
    def raw(cls, source: str, size: int) -> TarPlan:
        """Not a tar: the file itself as the blob (ModelPack's ``.raw`` layers)."""
        plan = cls.__new__(cls)
        plan.pieces = (_Range(source, size),) if size else (b"",)
        plan.size = size
        plan._digest = None
        return plan

    # -- identity and memo ----------------------------------------------------------------

    def key(self) -> str:
        """A key over the header bytes and the identity of each file read (see the module)."""
        h = hashlib.sha256(FORMAT.encode())
        for p in self.pieces:
            if isinstance(p, bytes):
                h.update(b"B" + hashlib.sha256(p).digest())
            else:
                h.update(b"F" + json.dumps(file_identity(p.source)).encode())
        return h.hexdigest()

    @staticmethod
    def _memo_path(key: str):
        return default_cache_dir() / "weights" / key[:2] / f"{key}.json"

    def remembered(self) -> str | None:
        if os.environ.get("OCIFORGE_WEIGHTS_REHASH", "") not in ("", "0"):
            return None
        try:
            obj = json.loads(self._memo_path(self.key()).read_text())
            return obj["digest"] if obj.get("size") == self.size else None
        except (OSError, ValueError, KeyError):
            return None

    def _remember(self, key: str, digest: str) -> None:
        # a read-only cache only costs a re-hash next time
        with contextlib.suppress(OSError):
            atomic_write(
                self._memo_path(key),
                json.dumps({"digest": digest, "size": self.size}),
                mkdir=True,
            )

    # -- one pass ----------------------------------------------------------------------------

    def _pump(self, sink) -> str:
        """Read every piece once, hashing it and handing it to ``sink`` (or to nothing).

        The files are read on this thread while another hashes and writes what was read before
        (both release the GIL), in :data:`CHUNK` pieces, two in flight: memory stays flat.
        """
        key = self.key()
        h = hashlib.sha256()
        q: queue.Queue = queue.Queue(2)
        error: list[BaseException] = []

        def drain() -> None:
            while (item := q.get()) is not None:
                if error:
                    continue
                try:
                    h.update(item)
                    if sink is not None:
                        sink.write(item)
                except BaseException as e:  # noqa: BLE001 - raised again on the reading thread
                    error.append(e)

        t = threading.Thread(target=drain, name="ociforge-weights-hash", daemon=True)
        t.start()
        try:
            for p in self.pieces:
                if error:
                    break
                if isinstance(p, bytes):
                    q.put(p)
                    continue
                try:
                    with open(p.source, "rb", buffering=0) as f:
                        if os.fstat(f.fileno()).st_size != p.size:
                            raise InvalidInput(f"{p.source} changed size while it was read")
                        left = p.size
                        while left and not error:
                            chunk = f.read(min(CHUNK, left))
                            if not chunk:
                                raise InvalidInput(f"{p.source} ended {left} bytes early")
                            q.put(chunk)
                            left -= len(chunk)
                except OSError as e:
                    raise InvalidInput(f"cannot read {p.source}: {e.strerror}") from None
        finally:
            q.put(None)
            t.join()
        if error:
            raise error[0]
        digest = "sha256:" + h.hexdigest()
        self._digest = digest
        self._remember(key, digest)
        return digest

    def measure(self) -> str:
        """The layer's digest (= diff_id): remembered, or found by reading the files once."""
        if self._digest is None:
            self._digest = self.remembered() or self._pump(None)
        return self._digest

    def write(self, store: BlobStore) -> str:
        """The blob in ``store`` (written and hashed in one pass, unless already there).

        The file is written beside the store's blobs and renamed into place under its digest
        once it is complete (as :class:`~ociforge.oci.blobstore.BlobWriter` does, hashing once).
        """
        known = self._digest or self.remembered()
        if known is not None and store.has(known):
            self._digest = known
            return known
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="blob-", dir=store.tmp_dir)
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                digest = self._pump(f)
            dest = store.path(digest)
            if dest.exists():
                os.unlink(tmp)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return digest

    def layer(self, media_type: str, annotations: dict[str, str] | None = None) -> Layer:
        digest = self.measure()
        return Layer(Descriptor(media_type, digest, self.size, dict(annotations or {})), digest)

    def open(self) -> BinaryIO:
        return io.BufferedReader(_PlanReader(self), CHUNK)


class _PlanReader(io.RawIOBase):
    """The plan's bytes as a seekable read-only stream (files opened one at a time)."""

    def __init__(self, plan: TarPlan) -> None:
        self._plan = plan
        self._starts = []
        pos = 0
        for p in plan.pieces:
            self._starts.append(pos)
            pos += len(p) if isinstance(p, bytes) else p.size
        self._pos = 0
        self._file: BinaryIO | None = None
        self._file_index = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._plan.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _piece(self) -> int:
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= self._pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def readinto(self, b) -> int:
        if self._pos >= self._plan.size:
            return 0
        i = self._piece()
        piece = self._plan.pieces[i]
        inner = self._pos - self._starts[i]
        view = memoryview(b)
        if isinstance(piece, bytes):
            n = min(len(view), len(piece) - inner)
            view[:n] = piece[inner : inner + n]
        else:
            if self._file_index != i:
                if self._file is not None:
                    self._file.close()
                try:
                    self._file = open(piece.source, "rb", buffering=0)  # noqa: SIM115
                except OSError as e:
                    raise NotFound(f"cannot read {piece.source}: {e.strerror}") from None
                self._file_index = i
            want = min(len(view), piece.size - inner)
            self._file.seek(inner)
            n = self._file.readinto(view[:want])
            if not n:
                raise InvalidInput(f"{piece.source} is shorter than when its layer was made")
        self._pos += n
        return n

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


class PlanSource:
    """The blobs of plans, by digest (a :class:`~ociforge.oci.image.BlobSource`)."""

    def __init__(self) -> None:
        self.plans: dict[str, TarPlan] = {}

    def add(self, plan: TarPlan) -> None:
        self.plans[plan.measure()] = plan

    def has(self, digest: str) -> bool:
        return digest in self.plans

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        plan = self.plans.get(desc.digest)
        if plan is None:
            raise NotFound(f"blob {desc.digest}")
        return plan.open()
