"""Fixtures for the base-image tests: the bookworm base built once per session (its .debs are
downloaded once into the session cache), unpacked rootfs per architecture, a loopback HTTP mirror.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ociforge.bases import base  # noqa: E402
from tests.support import rootfs  # noqa: E402

RECIPE = "python3.11-bookworm"


@pytest.fixture(scope="session")
def bookworm():
    """``{Platform: Image}`` of the default Python 3.11 base, amd64 and arm64."""
    return base.default_base("3.11", ["linux/amd64", "linux/arm64"])


@pytest.fixture(scope="session")
def unpacked(bookworm, tmp_path_factory):
    """``{"amd64": rootfs, "arm64": rootfs}``."""
    out = {}
    for plat, img in bookworm.items():
        out[plat.architecture] = rootfs.unpack(
            img, tmp_path_factory.mktemp(f"rootfs-{plat.architecture}")
        )
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path):
    """``(directory, url)``: a plain HTTP server on 127.0.0.1 serving ``directory``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def recipe_copy(tmp_path):
    """A copy of the bookworm recipe and its locks in ``tmp_path/recipes`` (to edit freely)."""
    src = base.load_recipe(RECIPE).path
    d = tmp_path / "recipes"
    (d / "locks").mkdir(parents=True)
    shutil.copy(src, d / src.name)
    for lock in (src.parent / "locks").glob(f"{RECIPE}-*.json"):
        shutil.copy(lock, d / "locks" / lock.name)
    return d / src.name
