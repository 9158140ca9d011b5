"""The showcase of system_packages: a model on ``opencv-python`` (not ``-headless``: its Qt build
needs ``libGL.so.1`` and GLib from the system).

Built without system packages, the build refuses, naming ``libGL.so.1`` and ``libgl1`` (cv2 is
imported at start); built with the packages it named, the image decodes a PNG with
``cv2.imdecode`` under bubblewrap (linux/amd64) and qemu (linux/arm64), answering what the local
call answers. Both builds happen once for the module (zstd layers).
"""

from __future__ import annotations

import base64
import importlib.metadata as md
import re

import cv2
import numpy as np
import pytest
import requests

import ociforge
from ociforge.bases import syspackages
from ociforge.errors import BuildError
from ociforge.transports.transport import open_source
from tests.build.conftest import serving
from tests.build.test_model_forms import load_source

pytestmark = pytest.mark.slow

MODEL = """
    import base64

    import cv2
    import numpy as np

    def predict(png):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(png), np.uint8), cv2.IMREAD_UNCHANGED)
        return {"shape": list(img.shape), "sum": int(img.sum()), "corner": img[0, -1].tolist()}
"""
PLATFORMS = ["linux/amd64", "linux/arm64"]


@pytest.fixture(scope="module")
def opencv(tmp_path_factory):
    """(the refusal's message, the packages it named, the layout, the sample, the local answer)."""
    tmp = tmp_path_factory.mktemp("opencv")
    ns = load_source(tmp, MODEL)
    pixels = (np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3) * 3) % 251
    ok, png = cv2.imencode(".png", pixels)
    assert ok
    sample = base64.b64encode(png.tobytes()).decode()
    local = ociforge.test(ns["predict"], sample)
    kw = dict(
        platforms=PLATFORMS,
        requirements=[f"opencv-python=={md.version('opencv-python')}"],
        compression="zstd",
        sbom=False,
    )
    with pytest.raises(BuildError) as err:
        ociforge.build(ns["predict"], to=f"oci:{tmp / 'refused'}:cv", **kw)
    msg = str(err.value)
    named = re.search(r"add system_packages=\[([^\]]*)\] \(the Debian packages", msg)
    assert named, msg
    packages = re.findall(r'"([^"]+)"', named.group(1))
    assert not (tmp / "refused").exists()
    ociforge.build(ns["predict"], to=f"oci:{tmp / 'out'}:cv", system_packages=packages, **kw)
    return msg, packages, f"oci:{tmp / 'out'}:cv", sample, local


def test_without_system_packages_the_build_names_libgl(opencv):
    msg, packages, *_ = opencv
    assert "libGL.so.1" in msg and 'system_packages=["libgl1"]' in msg
    assert "libgl1" in packages and "linux/amd64" in msg


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_with_them_the_image_decodes_a_png_as_the_local_call(opencv, arch, tmp_path):
    _msg, packages, out, sample, local = opencv
    img = open_source(out, platform=f"linux/{arch}")
    assert img.config.config.labels[syspackages.LABEL] == " ".join(sorted(packages))
    with serving(img, tmp_path / "rootfs") as url:
        r = requests.post(f"{url}/predict", json=sample, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == local["prediction"]
    assert local["prediction"]["shape"] == [5, 7, 3]
