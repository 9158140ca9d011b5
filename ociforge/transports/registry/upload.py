"""Pushing one blob: HEAD, cross-repository mount, monolithic or chunked upload, resume.

Uploads are where pushes die on real networks: a multi-GiB model layer over a flaky link must
not restart from byte 0 each time the connection drops. Blobs up to one chunk go in a single
``PUT``; bigger ones go as ``PATCH`` chunks with ``Content-Range`` (sized to honor the registry's
``OCI-Chunk-Min-Length``/``OCI-Chunk-Max-Length``), and after a dropped connection or a 5xx the
upload asks the registry how far it got (``GET`` on the session, ``Range: 0-N``) and continues
from there. A registry that lost the session, or answers 416, gets a fresh session from byte 0.
The source is re-opened at the offset (seeking when it can), so memory stays flat.

``Range: 0-0`` is ambiguous: the reference registry (distribution 2.8) reports an empty session
and a session holding one byte alike, and appends a ``PATCH`` wherever its ``Content-Range`` says
it starts. Reading it as "1 byte stored" after a failed first chunk loses byte 0 and the digest
is wrong at the end; reading it as "nothing stored" duplicates byte 0 in the other case. So a
status answer of ``0-0`` (or one past the blob's end, or not starting at 0) means "unknown": the
blob starts again in a fresh session, which costs at most the one chunk that failed. A ``PATCH``
answer moves the offset by what was sent (registries such as ECR answer with a stale ``Range``).
Completing a blob answered ``DIGEST_INVALID``, ``BLOB_UPLOAD_INVALID`` or ``BLOB_UPLOAD_UNKNOWN``
also starts it again in a new session. Every way round is bounded by the retry policy:
``attempts`` failures in a row without a chunk acknowledged, ``attempts`` restarts after such
refusals, and ``attempts`` failures per chunk of the blob in all (the reference registry drops a
session whose chunk was cut, so a flaky link can cost whole restarts, but never endlessly).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ...errors import OciforgeError
from ...oci.manifest import Descriptor
from ..progress import NullProgress, Progress
from .client import Client, RegistryError, TransientError, add_query

DEFAULT_CHUNK = 32 << 20
OCTET = "application/octet-stream"
_RANGE = re.compile(r"^(?:bytes=)?0-(\d+)$")
# Answers to completing (or continuing) an upload that mean "this session's bytes are not what
# they should be": start the blob again in a new session.
_RESTART_CODES = frozenset({"DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN"})


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


def stored_bytes(range_header: str | None, size: int) -> int | None:
    """How many bytes of a ``size``-byte blob an upload status ``Range`` says are stored.

    None when that cannot be known: no header, not ``0-N``, past the blob's end, or ``0-0``
    (an empty session and a one-byte one both read ``0-0`` on the reference registry).
    """
    m = _RANGE.match((range_header or "").strip())
    if not m:
        return None
    end = int(m.group(1))
    if end == 0 or end + 1 > size:
        return None
    return end + 1


def _refusal(e: RegistryError) -> bool:
    """A registry answer that means the session is unusable (start the blob over)."""
    return e.code in _RESTART_CODES or e.status in (404, 416)


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

    def _status(self, loc: str, size: int) -> tuple[str, int] | None:
        """Where the registry says an upload session stands: (location, next offset), or None
        when the session is gone or its offset cannot be known for sure (see the module notes)."""
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
        stored = stored_bytes(resp.headers.get("Range"), size)
        if resp.status_code not in (200, 204) or stored is None:
            return None
        new = resp.headers.get("Location")
        return (self.client.resolve(resp, new) if new else loc), stored

    def _upload(self, desc: Descriptor, opener, session) -> int:
        sent = [0]

        def count(n: int) -> None:
            sent[0] += n
            self.progress.advance(desc, n)

        loc, lo, hi = self._session_of(session) if session is not None else (None, 0, 0)
        offset, policy = 0, self.client.retry
        failures = 0  # failed attempts since a chunk was last acknowledged
        total = 0  # failed attempts in all
        restarts = 0  # sessions given up after the registry refused their bytes
        size = desc.size
        completing = False
        while True:
            try:
                if loc is None:
                    loc, lo, hi = self._start()
                    offset = 0
                    self.progress.restart(desc, 0)
                chunk = self._chunk(lo, hi)
                completing = False
                if size <= chunk and offset == 0:
                    completing = True
                    self._put(loc, desc, opener, count)
                    return sent[0]
                while offset < size:
                    n = min(chunk, size - offset)
                    loc, offset = self._patch(loc, offset, n, opener, count)
                    failures = 0
                completing = True
                self._put(loc, desc, None, count)
                return sent[0]
            except TransientError as e:
                failures += 1
                total += 1
                chunks = -(-size // self._chunk(lo, hi)) or 1
                if failures >= policy.attempts or total >= policy.attempts * chunks:
                    raise OciforgeError(
                        f"pushing blob {desc.digest} failed after {total} attempts: {e}"
                    ) from None
                time.sleep(policy.delay(failures, e.retry_after))
                if completing and self.exists(desc):
                    return sent[0]  # the registry completed the blob; only its answer was lost
                state = self._status(loc, size) if loc and size > self._chunk(lo, hi) else None
                if state is None:
                    loc = None  # lost or ambiguous session (or a single-PUT upload): start over
                else:
                    loc, offset = state
                    self.progress.restart(desc, offset)
            except _Restart as e:
                restarts += 1
                if restarts >= policy.attempts:
                    raise OciforgeError(
                        f"pushing blob {desc.digest} failed after {restarts} attempts: {e}"
                    ) from None
                time.sleep(policy.delay(restarts))
                loc = None

    def _patch(self, loc: str, offset: int, n: int, opener, count) -> tuple[str, int]:
        files: list[BinaryIO] = []

        def body() -> _Body:
            files.append(_open_at(opener, offset))
            return _Body(files[-1], n, count)

        with _restart_on_refusal(files):
            resp = self.client.request(
                "PATCH",
                loc,
                what="uploading a chunk",
                retry=False,
                ok=(201, 202, 416),
                headers={
                    "Content-Type": OCTET,
                    "Content-Range": f"{offset}-{offset + n - 1}",
                    "Content-Length": str(n),
                },
                body=body,
            )
        resp.close()
        if resp.status_code == 416:
            raise _Restart(f"{self.client.registry} refused the range {offset}-{offset + n - 1}")
        new = resp.headers.get("Location")
        # Our own count, not the answer's Range: some registries answer with a stale one.
        return (self.client.resolve(resp, new) if new else loc), offset + n

    def _put(self, loc: str, desc: Descriptor, opener, count) -> None:
        url = add_query(loc, digest=desc.digest)
        files: list[BinaryIO] = []
        if opener is None:
            what = f"completing upload of {desc.digest}"
            headers = {"Content-Length": "0", "Content-Type": OCTET}
            body: Callable[[], object] | bytes = b""
        else:
            what = f"uploading blob {desc.digest}"
            headers = {"Content-Type": OCTET, "Content-Length": str(desc.size)}

            def body() -> _Body:
                files.append(_open_at(opener, 0))
                return _Body(files[-1], desc.size, count)

        with _restart_on_refusal(files):
            resp = self.client.request(
                "PUT", url, what=what, retry=False, ok=(201, 204), headers=headers, body=body
            )
            resp.close()


class _Restart(Exception):
    """The registry refused the session's bytes or range: start the blob in a fresh session."""


@contextlib.contextmanager
def _restart_on_refusal(files: list[BinaryIO]) -> Iterator[None]:
    """Around one request of an upload session: a refusal of its bytes or range becomes
    :class:`_Restart`; the files the request's body opened are closed either way."""
    try:
        yield
    except RegistryError as e:
        if _refusal(e):
            raise _Restart(str(e)) from None
        raise
    finally:
        for f in files:
            f.close()
