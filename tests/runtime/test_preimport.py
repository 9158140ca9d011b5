"""Modules recorded at build time are imported once in the arbiter, before workers fork."""

from __future__ import annotations

import sys

from ociforge_runtime.server import preimport


def test_preimport_imports_listed_modules_and_skips_broken_ones(monkeypatch):
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    manifest = {"build": {"imports": ["colorsys", "no_such_module_anywhere"]}}
    assert preimport(manifest, {}) == ["colorsys"]
    assert "colorsys" in sys.modules


def test_preimport_can_be_turned_off(monkeypatch):
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    assert preimport({"build": {"imports": ["colorsys"]}}, {"OCIFORGE_PREIMPORT": "0"}) == []
    assert "colorsys" not in sys.modules
    assert preimport({}, {}) == []
