"""Artifact layers are reused when their files hash the same, and rewritten when a byte changes."""

from __future__ import annotations

import importlib
import os

from ociforge.blobstore import BlobStore

build_mod = importlib.import_module("ociforge.build")  # the module, not the function ociforge.build


def test_unchanged_artifacts_are_not_recompressed(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.bin").write_bytes(b"\x01" * 4096)
    store = BlobStore(tmp_path / "store")
    first = build_mod._artifact_layers({"weights": str(weights)}, store, "gzip")
    calls = []
    real = build_mod.write_layer
    monkeypatch.setattr(build_mod, "write_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = build_mod._artifact_layers({"weights": str(weights)}, store, "gzip")
    assert again == first and calls == []
    # same size and the same mtime, one byte different: the content hash notices
    st = os.stat(weights / "w.bin")
    (weights / "w.bin").write_bytes(b"\x01" * 4095 + b"\x02")
    os.utime(weights / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = build_mod._artifact_layers({"weights": str(weights)}, store, "gzip")
    assert calls == [1] and changed[0][1].digest != first[0][1].digest
