"""sha256 digests: validation, and hashing while bytes stream past.

A content digest is what makes images addressable and reproducible, so every write of a blob goes
through a hashing wrapper; nothing ever re-reads a blob just to hash it.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from ..errors import DigestMismatch, InvalidInput

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
CHUNK = 1 << 20


def validate(digest: str) -> str:
    """Return ``digest`` unchanged when it is ``sha256:`` + 64 lowercase hex, else raise."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidInput(
            f"invalid digest {digest!r}: expected 'sha256:' and 64 lowercase hex digits"
        )
    return digest


def hex_of(digest: str) -> str:
    """The hex part of a validated digest (the file name under ``blobs/sha256/``)."""
    return validate(digest).split(":", 1)[1]


def of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class HashingWriter:
    """A write-only file object that counts and hashes what passes through to ``sink``.

    ``sink`` may be None, to hash without storing (a diff_id of an uncompressed tar, for example).
    """

    def __init__(self, sink: BinaryIO | None = None) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._hash.update(data)
        n = len(data)
        self.size += n
        if self._sink is not None:
            self._sink.write(data)
        return n

    def flush(self) -> None:
        if self._sink is not None:
            self._sink.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class VerifyingReader:
    """Reads from ``src`` while hashing; :meth:`verify` raises when the bytes did not match.

    Used on every blob that comes from outside (a registry, an archive) before it is kept.
    """

    def __init__(self, src: BinaryIO, expected: str, what: str = "blob") -> None:
        self._src = src
        self._hash = hashlib.sha256()
        self.expected = validate(expected)
        self.size = 0
        self.what = what

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def verify(self) -> None:
        got = "sha256:" + self._hash.hexdigest()
        if got != self.expected:
            raise DigestMismatch(f"{self.what}: content hashes to {got}, expected {self.expected}")


def copy_stream(src: BinaryIO, dst, chunk: int = CHUNK) -> int:
    """Copy in fixed-size chunks so memory stays flat whatever the blob's size."""
    total = 0
    while True:
        data = src.read(chunk)
        if not data:
            return total
        dst.write(data)
        total += len(data)
