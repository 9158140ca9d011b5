"""Fixtures for the weights tests: a real registry, a small model folder, and the real peers.

The peers are the tools a cluster runs, each in a virtual environment of its own (created here
under ``~/.cache/ociforge-test/venvs/NAME``, or ``$OCIFORGE_TEST_VENVS``, and reused when
present): KServe's storage initializer (``kserve-storage``) and the ``oras`` Python package. When
one cannot be had the test fails: a skipped interoperability check proves nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.peers import peer_python  # noqa: E402  (venvs of their own)
from tests.support.registry import RegistryServer  # noqa: E402


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("reg"), mode="http") as reg:
        yield reg


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    return peer_python("kserve-storage")


@pytest.fixture(scope="session")
def oras_python() -> Path:
    return peer_python("oras")


def make_model(root: Path, big: int = 9 << 20) -> Path:
    """A small model folder: an incompressible weight file (a layer of its own), configs, docs,
    code, a dataset and a nested folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.safetensors").write_bytes(os.urandom(big))
    (root / "config.json").write_text('{"hidden_size": 8, "architectures": ["Tiny"]}\n')
    (root / "tokenizer.json").write_text('{"vocab": {"a": 0, "b": 1}}\n' * 200)
    (root / "README.md").write_text("# tiny\n\nA test model.\n")
    (root / "handler.py").write_text("def load():\n    return 1\n")
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "eval.csv").write_text("x,y\n1,2\n")
    return root


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return make_model(tmp_path / "tiny-model")


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by its relative path (symlinks followed)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
