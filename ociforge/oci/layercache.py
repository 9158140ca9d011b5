"""Remembered layers: the layer a known recipe produced, reused without recompressing anything.

A layer made from inputs that are themselves content-addressed (wheels by sha256, .debs by
sha256) is a pure function of those inputs and of the settings that shape its bytes. The key
hashes all of them, including the compressor's library version, since deflate and zstd output
can change between library builds; a hit is used only if its blob is still in the store.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import zstandard
from zlib_ng import zlib_ng

from ..fsutil import atomic_write
from ..version import __version__
from .blobstore import BlobStore
from .layer import Layer
from .manifest import Descriptor, canonical_json


def compressor_versions() -> dict[str, str]:
    return {
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "zlib-ng": zlib_ng.ZLIBNG_VERSION,
        "zstd": zstandard.ZSTD_VERSION and ".".join(map(str, zstandard.ZSTD_VERSION)),
    }


def memo_key(*parts) -> str:
    """A key over ``parts`` (JSON-able), this ociforge version and the compressors' versions."""
    blob = canonical_json([__version__, compressor_versions(), list(parts)])
    return hashlib.sha256(blob).hexdigest()


def _path(store: BlobStore, key: str) -> Path:
    return store.root / "layers" / key[:2] / f"{key}.json"


def lookup(store: BlobStore, key: str) -> Layer | None:
    try:
        obj = json.loads(_path(store, key).read_text())
        layer = Layer(Descriptor.from_json(obj["descriptor"]), obj["diff_id"])
    except (OSError, ValueError, KeyError):
        return None
    return layer if store.has(layer.digest) else None


def remember(store: BlobStore, key: str, layer: Layer) -> None:
    record = {"descriptor": layer.descriptor.to_json(), "diff_id": layer.diff_id}
    atomic_write(_path(store, key), canonical_json(record), mkdir=True)


def memoized(store: BlobStore, key: str, make: Callable[[], Layer | None]) -> Layer | None:
    """The remembered layer for ``key``, or ``make()``'s, remembered for next time (``make``
    may return None when there is nothing to write: nothing is remembered then)."""
    layer = lookup(store, key)
    if layer is None:
        layer = make()
        if layer is not None:
            remember(store, key, layer)
    return layer
