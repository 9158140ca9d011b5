"""Remembered layers: the layer a known recipe produced, reused without recompressing anything.

A layer made from inputs that are themselves content-addressed (wheels by sha256, .debs by
sha256) is a pure function of those inputs and of the settings that shape its bytes. The key
hashes all of them, including the compressor's library version, since deflate and zstd output
can change between library builds; a hit is used only if its blob is still in the store.

A build may :func:`attach` a *peer* to its store (:class:`ociforge.cache.memo.BuildMemo`): a
memo shared through a registry or a layout. A local miss then asks the peer, whose hit is a layer
whose blob lives there (nothing is made, nothing downloaded); and every layer found or made here
is told to the peer, which publishes it after the build.
"""

from __future__ import annotations

import hashlib
import json
import weakref
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

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


class Peer(Protocol):
    """A memo beyond this machine's store (see the module docstring)."""

    def layer(self, key: str) -> Layer | None: ...

    def note(self, key: str, layer: Layer) -> None: ...


_peers: weakref.WeakKeyDictionary[BlobStore, Peer] = weakref.WeakKeyDictionary()


def attach(store: BlobStore, peer: Peer | None) -> None:
    """Let ``peer`` answer (and hear of) ``store``'s memo lookups; None detaches."""
    if peer is None:
        _peers.pop(store, None)
    else:
        _peers[store] = peer


def peer_of(store: BlobStore) -> Peer | None:
    """The peer attached to ``store`` (None: none)."""
    return _peers.get(store)


def memoized(store: BlobStore, key: str, make: Callable[[], Layer | None]) -> Layer | None:
    """The remembered layer for ``key`` (here, else from the store's peer), or ``make()``'s,
    remembered for next time (``make`` may return None when there is nothing to write: nothing
    is remembered then)."""
    peer = _peers.get(store)
    layer = lookup(store, key)
    if layer is None and peer is not None:
        found = peer.layer(key)
        if found is not None:
            return found  # its blob is the peer's: nothing to remember here
    if layer is None:
        layer = make()
        if layer is not None:
            remember(store, key, layer)
    if layer is not None and peer is not None:
        peer.note(key, layer)
    return layer
