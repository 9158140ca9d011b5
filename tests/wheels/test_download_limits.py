"""Downloads stop at their known size: a wheel at the lock's size, a .deb and a Packages index at
the size their signed index gives. A server that sends more (or never stops) is cut there and the
file refused before any hash check, so it cannot fill the disk or the memory.
"""

from __future__ import annotations

import hashlib
import resource

import pytest

from ociforge.bases import debian
from ociforge.errors import DigestMismatch
from ociforge.python.lock import LockedWheel
from ociforge.python.wheelcache import WheelCache
from tests.registry.hostile import Reply, Server, endless

PAYLOAD = b"x" * 4096
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def endless_server():
    with Server(
        lambda req: Reply(200, {"Content-Type": "application/octet-stream"}, endless())
    ) as s:
        yield s


@pytest.fixture
def long_server():
    """Declares (and sends) twice the expected bytes."""
    with Server(lambda req: Reply(200, {}, PAYLOAD + PAYLOAD)) as s:
        yield s


def _wheel(url: str, size: int | None = len(PAYLOAD)) -> LockedWheel:
    return LockedWheel("w", "1", "w-1-py3-none-any.whl", url, SHA, size)


@pytest.mark.parametrize("server", ["endless_server", "long_server"])
def test_wheel_download_stops_at_the_locked_size(tmp_path, server, request):
    srv = request.getfixturevalue(server)
    cache = WheelCache(tmp_path / "wheels")
    before = _peak_mib()
    with pytest.raises(DigestMismatch, match="more than the 4096 bytes"):  # it stops by itself
        cache.get(_wheel(f"{srv.url}/w-1-py3-none-any.whl"))
    assert _peak_mib() - before < 64
    assert not any((tmp_path / "wheels").rglob("*.whl"))
    assert [p for p in (tmp_path / "wheels" / ".tmp").iterdir()] == []


def test_wheel_of_the_locked_size_is_kept(tmp_path):
    with Server(lambda req: Reply(200, {}, PAYLOAD)) as srv:
        path = WheelCache(tmp_path / "wheels").get(_wheel(f"{srv.url}/w-1-py3-none-any.whl"))
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("server", ["endless_server", "long_server"])
def test_deb_download_stops_at_the_index_size(tmp_path, server, request):
    srv = request.getfixturevalue(server)
    pkg = debian.Package("p", "1", "amd64", "pool/p.deb", SHA, len(PAYLOAD))
    before = _peak_mib()
    with pytest.raises(DigestMismatch, match="longer than the 4096 bytes"):  # it stops by itself
        debian.fetch_deb(srv.url, pkg, cache_dir=tmp_path / "debs")
    assert _peak_mib() - before < 64
    assert list((tmp_path / "debs").iterdir()) == []


def test_deb_of_the_index_size_is_kept(tmp_path):
    pkg = debian.Package("p", "1", "amd64", "pool/p.deb", SHA, len(PAYLOAD))
    with Server(lambda req: Reply(200, {}, PAYLOAD)) as srv:
        path = debian.fetch_deb(srv.url, pkg, cache_dir=tmp_path / "debs")
    assert path.read_bytes() == PAYLOAD


def test_packages_index_download_stops_at_the_release_size(tmp_path, endless_server):
    rel = "main/binary-amd64/Packages.gz"
    release = debian.Release(
        endless_server.url, "bookworm", "bookworm", 0, False, {rel: (SHA, len(PAYLOAD))}
    )
    before = _peak_mib()
    with pytest.raises(DigestMismatch, match="longer than the 4096 bytes"):  # it stops by itself
        debian.fetch_index(release, "amd64", cache_dir=tmp_path)
    assert _peak_mib() - before < 64
