"""``build(verify=True)`` / ``ociforge build --verify``: each platform's image, once written, is
started as ``ociforge run`` starts it and must answer the test sample as the local test did. A
good model passes on linux/amd64 and linux/arm64; a model that fails only inside the image (its
wheel needs a library the image lacks, the library check told to ignore it) fails the build,
naming the platform and its answer, with the image written and marked not verified."""

from __future__ import annotations

import json
import sys

import pytest

import ociforge
from ociforge.builder.verify import VERIFIED, VerificationFailed
from ociforge.errors import InvalidInput
from ociforge.run.sandbox import SandboxUnavailable
from ociforge.transports.transport import open_source
from tests.build.test_model_forms import load_source
from tests.conftest import run_cli
from tests.support.elfmaker import make_elf
from tests.wheels.wheelmaker import make_wheel

TAG = "cp311-cp311-manylinux_2_17_x86_64"
SO = "cpython-311-x86_64-linux-gnu.so"

GOOD = """
def predict(rows):
    return [sum(r) * 2 for r in rows]
"""


def test_cli_verify_passes_on_amd64_and_arm64(tmp_path):
    (tmp_path / "m.py").write_text(GOOD)
    out = run_cli(
        "build", "m.py:predict", "--platform", "linux/amd64,linux/arm64",
        "--test-sample", "[[1, 2], [3, 4]]", "--verify", "--to", f"oci:{tmp_path / 'out'}:m",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verified"] == {"linux/amd64": VERIFIED, "linux/arm64": VERIFIED}
    assert "verify: linux/arm64: verified" in out.stderr and "qemu-aarch64-static" in out.stderr


# the host's glneed: a pure-Python _gl; the image's (from the wheel): an extension module that
# needs libGL.so.1, which the image lacks
IMPORTS_GL = """
def predict(x):
    import glneed._gl  # noqa: F401

    return x
"""


@pytest.fixture
def glneed(tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "glneed", "1.0", tag=TAG, files={f"glneed/_gl.{SO}": make_elf(("libGL.so.1", "libc.so.6"))})  # fmt: skip
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    host = tmp_path / "hostpkgs" / "glneed"
    host.mkdir(parents=True)
    (host / "__init__.py").write_text("")
    (host / "_gl.py").write_text("")
    monkeypatch.syspath_prepend(str(host.parent))
    for name in ("glneed", "glneed._gl"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_verify_catches_a_model_that_fails_only_inside_the_image(tmp_path, glneed):
    predict = load_source(tmp_path, IMPORTS_GL)["predict"]
    assert ociforge.test(predict, [1, 2]) == {"prediction": [1, 2]}  # fine on this machine
    to = f"oci:{tmp_path / 'out'}:m"
    with pytest.raises(VerificationFailed) as err:
        ociforge.build(
            predict, requirements=["glneed==1.0"], to=to, test_sample=[1, 2],
            check_libraries=False, verify=True,
        )  # fmt: skip
    msg = str(err.value)
    assert "linux/amd64: answered HTTP 500" in msg and "libGL.so.1" in msg, msg
    assert "NOT verified" in msg
    result = err.value.result
    assert result.verified["linux/amd64"].startswith("not verified: answered HTTP 500")
    assert open_source(to).digest == result.digest  # what was written stays


def test_verify_is_refused_before_any_work(tmp_path, monkeypatch):
    predict = load_source(tmp_path, GOOD)["predict"]
    to = f"oci:{tmp_path / 'out'}:m"
    with pytest.raises(InvalidInput, match="verify=True needs test_sample"):
        ociforge.build(predict, to=to, verify=True)
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        ociforge.build(predict, to=to, verify=True, test_sample=[[1]])
    assert not (tmp_path / "out").exists()


def test_an_answer_other_than_the_local_one_is_named():
    from ociforge.builder.verify import _mismatch
    from ociforge.run.probe import Answer

    same = Answer(200, {"prediction": [2]}, '{"prediction":[2]}')
    assert _mismatch(same, {"prediction": [2]}) is None
    other = Answer(200, {"prediction": [2.0000001]}, '{"prediction":[2.0000001]}')
    why = _mismatch(other, {"prediction": [2]})
    assert (
        why
        == 'answered {"prediction":[2.0000001]} where the local test answered {"prediction":[2]}'
    )
    assert _mismatch(other, None) is None  # a package folder: any success counts
    dead = Answer(0, text="the server exited 3 before it was ready", output="Traceback ...\nboom")
    assert _mismatch(dead, {"prediction": [2]}).endswith(
        "its output ended with:\n      Traceback ...\n      boom"
    )
