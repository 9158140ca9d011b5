"""Fixtures for the registry tests: real registries (one per mode, per session) and images.

Other folders can use the same servers: put the repository root on ``sys.path`` (as below) and
``from tests.support.registry import RegistryServer``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ociforge.oci.blobstore import BlobStore  # noqa: E402
from ociforge.oci.image import Image, append, make_index, store_source  # noqa: E402
from ociforge.oci.layer import Entry, write_layer  # noqa: E402
from ociforge.oci.platform import Platform  # noqa: E402
from ociforge.transports.registry.client import RetryPolicy  # noqa: E402
from tests.support.registry import RegistryServer  # noqa: E402

FAST_RETRY = RetryPolicy(attempts=10, base=0.01, cap=0.05)


@pytest.fixture(scope="session")
def http_registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("reg"), mode="http") as reg:
        yield reg


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("reg"), mode="tls") as reg:
        yield reg


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("reg"), mode="token") as reg:
        yield reg


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """An empty HOME and no auth files or credential variables: lookups start from nothing."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in (
        "DOCKER_CONFIG",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        "OCIFORGE_REGISTRY_USERNAME",
        "OCIFORGE_REGISTRY_PASSWORD",
        "OCIFORGE_REGISTRY",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def store(tmp_path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def build_image(
    store: BlobStore,
    platform: str = "linux/amd64",
    files: dict[str, bytes] | None = None,
    base: Image | None = None,
) -> Image:
    """A small image with one layer holding ``files`` (random content by default)."""
    files = files if files is not None else {"model.bin": os.urandom(64 << 10)}
    layer = write_layer([Entry.file(p, data) for p, data in files.items()], store)
    return append(
        base,
        [layer],
        store_source(store),
        platform=None if base else Platform.parse(platform),
        store=store,
    )


def build_index(store: BlobStore, platforms=("linux/amd64", "linux/arm64"), size: int = 64 << 10):
    return make_index([build_image(store, p, {"model.bin": os.urandom(size)}) for p in platforms])


@pytest.fixture
def image_factory(store):
    def make(platform: str = "linux/amd64", size: int = 64 << 10, base: Image | None = None):
        return build_image(store, platform, {"model.bin": os.urandom(size)}, base=base)

    return make


@pytest.fixture
def index_factory(store):
    def make(platforms=("linux/amd64", "linux/arm64"), size: int = 64 << 10):
        return build_index(store, platforms, size)

    return make


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Retries without the production waits: fault tests stay fast."""
    return FAST_RETRY
