"""Records: small JSON facts a build keeps by a memo key, on this machine and in its cache.

A layer entry says which blob a recipe made; a record says something a build learned that is
not a layer, keyed by what it was learned from: a wheel's files and ELF facts (by the wheel's
sha256), which wheels a startup closure read (:func:`ociforge.builder.layers.startup_bytecode_layer`),
the files a system-packages layer provides. A fresh runner that finds them in the registry
cache need not download the wheels or ``.deb`` files they were read from.

Locally a record is a file under the store (``records/KEY``); the build's cache (the store's
peer, :class:`ociforge.cache.memo.BuildMemo`) is asked on a local miss, and hears of every record
found or made, to leave it in the cache after the build. A record is hostile input wherever it
comes from: ``read`` checks it and raises :class:`~ociforge.cache.entry.BadEntry` (or
``ValueError``/``KeyError``/``TypeError``) for one it cannot use, which is then a miss.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InvalidInput
from ..fsutil import atomic_write
from ..oci.blobstore import BlobStore
from ..oci.layercache import peer_of
from ..oci.manifest import canonical_json
from .entry import MAX_RECORD, BadEntry, key_hex

log = logging.getLogger("ociforge.cache")

T = TypeVar("T")
_BAD = (BadEntry, InvalidInput, ValueError, KeyError, TypeError, AttributeError)


def _path(store: BlobStore, key: str) -> Path:
    hexkey = key_hex(key)
    return store.root / "records" / hexkey[:2] / f"{hexkey}.json"


def recall(store: BlobStore, key: str, read: Callable[[dict], T]) -> T | None:
    """``read(data)`` of the record for ``key``: this machine's, else the cache's (then kept
    here too); None when neither holds a usable one."""
    peer = peer_of(store)
    data: Any = None
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(_path(store, key).read_bytes())
    if data is not None:
        try:
            value = read(data)
        except _BAD as e:
            log.info("ignoring record %s on this machine: %s", key_hex(key), e)
        else:
            if peer is not None and hasattr(peer, "note_record"):
                peer.note_record(key, data)  # the cache gets it if it lacks it
            return value
    if peer is None or not hasattr(peer, "record"):
        return None

    def checked(d: dict) -> tuple[dict, T]:
        try:
            return d, read(d)
        except _BAD as e:
            raise BadEntry(f"record it cannot use: {str(e)[:200]}") from None

    found = peer.record(key, checked)
    if found is None:
        return None
    data, value = found
    _write(store, key, data)
    return value


def keep(store: BlobStore, key: str, data: dict) -> None:
    """Keep ``data`` under ``key`` here, and in the cache after the build."""
    _write(store, key, data)
    peer = peer_of(store)
    if peer is not None and hasattr(peer, "note_record"):
        peer.note_record(key, data)


def share(store: BlobStore, keys: Iterable[str]) -> None:
    """Tell the build's cache of the records this machine holds for ``keys`` (as they are: a
    reader checks them), so that a build whose step was a local hit (a library check that
    passed here before) still leaves the records a fresh runner needs for a miss."""
    peer = peer_of(store)
    if peer is None or not hasattr(peer, "note_record"):
        return
    for key in keys:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(_path(store, key).read_bytes())
            if isinstance(data, dict):
                peer.note_record(key, data)


def _write(store: BlobStore, key: str, data: dict) -> None:
    raw = canonical_json(data)
    if len(raw) > 16 * MAX_RECORD:
        return  # nothing a build keeps is this large
    with contextlib.suppress(OSError, InvalidInput):
        atomic_write(_path(store, key), raw, mkdir=True)


# checks for readers


def hexes(value: Any, what: str, most: int = 100_000) -> list[str]:
    """A list of sha256 hex digests, or :class:`BadEntry`."""
    if not isinstance(value, list) or len(value) > most:
        raise BadEntry(f"{what} is not a list of sha256s")
    for v in value:
        if not isinstance(v, str) or len(v) != 64 or v.strip("0123456789abcdef"):
            raise BadEntry(f"{what} holds {str(v)[:80]!r}, not a sha256")
    return list(value)


def strings(value: Any, what: str, most: int = 1_000_000, longest: int = 4096) -> list[str]:
    """A list of strings (each at most ``longest``), or :class:`BadEntry`."""
    if not isinstance(value, list) or len(value) > most:
        raise BadEntry(f"{what} is not a list of strings")
    if not all(isinstance(v, str) and len(v) <= longest for v in value):
        raise BadEntry(f"{what} holds something other than a short string")
    return list(value)
