"""Artifact layers are reused when their files hash the same, and rewritten when a byte changes."""

from __future__ import annotations

import os

from ociforge.builder import layers
from ociforge.oci.blobstore import BlobStore


def test_unchanged_artifacts_are_not_recompressed(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.bin").write_bytes(b"\x01" * 4096)
    store = BlobStore(tmp_path / "store")
    first = layers.artifact_layers({"weights": str(weights)}, store, "gzip")
    calls = []
    real = layers.write_layer
    monkeypatch.setattr(layers, "write_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = layers.artifact_layers({"weights": str(weights)}, store, "gzip")
    assert again == first and calls == []
    # same size and the same mtime, one byte different: the content hash notices
    st = os.stat(weights / "w.bin")
    (weights / "w.bin").write_bytes(b"\x01" * 4095 + b"\x02")
    os.utime(weights / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = layers.artifact_layers({"weights": str(weights)}, store, "gzip")
    assert calls == [1] and changed[0][1].digest != first[0][1].digest
