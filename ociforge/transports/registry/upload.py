"""Pushing one blob: HEAD, cross-repository mount, monolithic or chunked upload, resume.

Uploads are where pushes die on real networks: a multi-GiB model layer over a flaky link must
not restart from byte 0 each time the connection drops. Blobs up to one chunk go in a single
``PUT``; bigger ones go as ``PATCH`` chunks with ``Content-Range`` (sized to honor the registry's
``OCI-Chunk-Min-Length``/``OCI-Chunk-Max-Length``), and after a dropped connection or a 5xx the
upload asks the registry how far it got (``GET`` on the session, ``Range: 0-N``) and continues
from there. A registry that lost the session, or answers 416, gets a fresh session from byte 0.
The source is re-opened at the offset (seeking when it can), so memory stays flat.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from ...errors import OciforgeError
from ...oci.manifest import Descriptor
from ..progress import NullProgress, Progress
from .client import Client, RegistryError, TransientError, add_query

DEFAULT_CHUNK = 32 << 20
OCTET = "application/octet-stream"
_RANGE = re.compile(r"^(?:bytes=)?(\d+)-(\d+)$")


@dataclass
class BlobOutcome:
    outcome: str  # pushed | skipped | mounted
    bytes_sent: int = 0


class _Body:
    """``length`` bytes of ``f`` as a request body: counted, reported, never over-read."""

    def __init__(self, f: BinaryIO, length: int, on_read: Callable[[int], None]) -> None:
        self._f = f
        self._left = length
        self._len = length
        self._on_read = on_read

    def __len__(self) -> int:
        return self._len

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if n is None or n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        if not data:
            raise OciforgeError(f"blob source ended {self._left} bytes early")
        self._left -= len(data)
        self._on_read(len(data))
        return data


def _open_at(opener: Callable[[], BinaryIO], offset: int) -> BinaryIO:
    f = opener()
    if offset:
        try:
            f.seek(offset)
        except (AttributeError, OSError, ValueError):
            left = offset
            f.close()
            f = opener()
            while left:
                data = f.read(min(left, 1 << 20))
                if not data:
                    f.close()
                    raise OciforgeError(
                        "blob source is shorter than the registry's upload offset"
                    ) from None
                left -= len(data)
    return f


def _range_end(resp) -> int | None:
    m = _RANGE.match(resp.headers.get("Range", "").strip())
    return int(m.group(2)) if m else None


class Uploader:
    """Pushes blobs into ``repository`` through ``client``; one instance serves many threads."""

    def __init__(
        self,
        client: Client,
        repository: str,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        progress: Progress | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.client = client
        self.repo = repository
        self.chunk_size = chunk_size
        self.progress = progress or NullProgress()

    def exists(self, desc: Descriptor) -> bool:
        resp = self.client.request(
            "HEAD",
            f"/v2/{self.repo}/blobs/{desc.digest}",
            what=f"checking blob {desc.digest}",
            ok=(200, 404),
        )
        resp.close()
        return resp.status_code == 200

    def push(
        self, desc: Descriptor, opener: Callable[[], BinaryIO], mount_from: tuple[str, ...] = ()
    ) -> BlobOutcome:
        """Make ``desc`` present in the repository, by the cheapest way that works."""
        if self.exists(desc):
            self.progress.done(desc, "skipped")
            return BlobOutcome("skipped")
        session = None
        for origin in mount_from:
            resp = self.client.request(
                "POST",
                add_query(f"/v2/{self.repo}/blobs/uploads/", mount=desc.digest, **{"from": origin}),
                what=f"mounting blob {desc.digest} from {origin}",
                ok=(201, 202),
            )
            resp.close()
            if resp.status_code == 201:
                self.progress.done(desc, "mounted")
                return BlobOutcome("mounted")
            session = resp  # mount refused: the registry opened an ordinary upload instead
        self.progress.start(desc)
        sent = self._upload(desc, opener, session)
        self.progress.done(desc, "pushed")
        return BlobOutcome("pushed", sent)

    # -- the upload itself
    def _start(self) -> tuple[str, int, int]:
        resp = self.client.request(
            "POST",
            f"/v2/{self.repo}/blobs/uploads/",
            what="starting a blob upload",
            ok=(202,),
            headers={"Content-Length": "0"},
        )
        resp.close()
        return self._session_of(resp)

    def _session_of(self, resp) -> tuple[str, int, int]:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{self.client.registry}: upload session without a Location header")
        lo = int(resp.headers.get("OCI-Chunk-Min-Length") or 0)
        hi = int(resp.headers.get("OCI-Chunk-Max-Length") or 0)
        return self.client.resolve(resp, loc), lo, hi

    def _chunk(self, lo: int, hi: int) -> int:
        size = max(self.chunk_size, lo)
        return min(size, hi) if hi else size

    def _status(self, loc: str) -> tuple[str, int] | None:
        """Where the registry says an upload session stands: (location, next offset), or None."""
        try:
            resp = self.client.request(
                "GET",
                loc,
                what="checking an upload session",
                ok=(204, 200, 404, 400, 416),
                retry=True,
            )
        except RegistryError:
            return None
        resp.close()
        end = _range_end(resp)
        if resp.status_code not in (200, 204) or end is None:
            return None
        new = resp.headers.get("Location")
        return (self.client.resolve(resp, new) if new else loc), end + 1

    def _upload(self, desc: Descriptor, opener, session) -> int:
        sent = [0]

        def count(n: int) -> None:
            sent[0] += n
            self.progress.advance(desc, n)

        loc, lo, hi = self._session_of(session) if session is not None else (None, 0, 0)
        offset, failures, policy = 0, 0, self.client.retry
        size = desc.size
        while True:
            try:
                if loc is None:
                    loc, lo, hi = self._start()
                    offset = 0
                    self.progress.restart(desc, 0)
                chunk = self._chunk(lo, hi)
                if size <= chunk and offset == 0:
                    self._put(loc, desc, opener, count)
                    return sent[0]
                while offset < size:
                    n = min(chunk, size - offset)
                    loc, offset = self._patch(loc, offset, n, opener, count)
                    failures = 0
                self._put(loc, desc, None, count)
                return sent[0]
            except TransientError as e:
                failures += 1
                if failures >= policy.attempts:
                    raise OciforgeError(
                        f"pushing blob {desc.digest} failed after {failures} attempts: {e}"
                    ) from None
                time.sleep(policy.delay(failures, e.retry_after))
                state = self._status(loc) if loc and size > self._chunk(lo, hi) else None
                if state is None:
                    loc = None  # lost session (or a single-PUT upload): start over
                else:
                    loc, offset = state
                    self.progress.restart(desc, offset)
            except _Restart:
                failures += 1
                if failures >= policy.attempts:
                    raise OciforgeError(
                        f"pushing blob {desc.digest}: registry kept refusing ranges"
                    ) from None
                loc = None

    def _patch(self, loc: str, offset: int, n: int, opener, count) -> tuple[str, int]:
        files: list[BinaryIO] = []

        def body() -> _Body:
            files.append(_open_at(opener, offset))
            return _Body(files[-1], n, count)

        try:
            resp = self.client.request(
                "PATCH",
                loc,
                what="uploading a chunk",
                retry=False,
                ok=(202, 416),
                headers={
                    "Content-Type": OCTET,
                    "Content-Range": f"{offset}-{offset + n - 1}",
                    "Content-Length": str(n),
                },
                body=body,
            )
        finally:
            for f in files:
                f.close()
        resp.close()
        if resp.status_code == 416:
            raise _Restart()
        new = resp.headers.get("Location")
        end = _range_end(resp)
        return (self.client.resolve(resp, new) if new else loc), (
            end + 1 if end is not None else offset + n
        )

    def _put(self, loc: str, desc: Descriptor, opener, count) -> None:
        url = add_query(loc, digest=desc.digest)
        if opener is None:
            resp = self.client.request(
                "PUT",
                url,
                what=f"completing upload of {desc.digest}",
                retry=False,
                ok=(201, 204),
                headers={"Content-Length": "0", "Content-Type": OCTET},
                body=b"",
            )
            resp.close()
            return
        files: list[BinaryIO] = []

        def body() -> _Body:
            files.append(_open_at(opener, 0))
            return _Body(files[-1], desc.size, count)

        try:
            resp = self.client.request(
                "PUT",
                url,
                what=f"uploading blob {desc.digest}",
                retry=False,
                ok=(201, 204),
                headers={"Content-Type": OCTET, "Content-Length": str(desc.size)},
                body=body,
            )
            resp.close()
        finally:
            for f in files:
                f.close()


class _Restart(Exception):
    """The registry refused the range (416): the session is unusable, start a fresh one."""
