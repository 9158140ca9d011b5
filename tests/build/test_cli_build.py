"""``ociforge build`` from the command line with ``[tool.ociforge]`` settings, and the README's
first command (``ociforge example``)."""

from __future__ import annotations

import gzip
import json
import os
import textwrap
import time

import pytest

from ociforge.transports.transport import open_source
from tests.build.conftest import serving


def test_build_reads_pyproject_settings(tmp_path, cli):
    proj = tmp_path / "proj"
    (proj / "assets").mkdir(parents=True)
    (proj / "assets" / "greeting.txt").write_text("hello")
    (proj / "pyproject.toml").write_text(
        textwrap.dedent("""
        [project]
        name = "greeter"

        [tool.ociforge]
        name = "greeter"
        version = "2.0.0"
        platforms = ["linux/amd64", "linux/arm64"]
        compression = "zstd"
        files = { "assets" = "assets" }
        metadata = { description = "says hello" }
        test_sample = "world"
    """)
    )
    (proj / "serve.py").write_text(
        textwrap.dedent("""
        class Greeter:
            def load(self):
                with open("assets/greeting.txt") as f:
                    self.word = f.read()
            def predict(self, name):
                return f"{self.word}, {name}"
    """)
    )
    out = cli("build", "serve.py:Greeter", "--json", "--to", f"oci:{tmp_path / 'out'}:v2", cwd=proj)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["platforms"] == ["linux/amd64", "linux/arm64"]
    idx = open_source(f"oci:{tmp_path / 'out'}:v2")
    assert idx.index.annotations["org.opencontainers.image.version"] == "2.0.0"
    assert idx.index.annotations["org.opencontainers.image.description"] == "says hello"
    amd = idx.select("linux/amd64")
    assert all(d.media_type.endswith("+zstd") for d in amd.layers[-3:])
    with serving(amd, tmp_path / "rootfs") as url:
        import requests

        assert requests.post(f"{url}/predict", json="ada").json()["prediction"] == "hello, ada"
    bad = proj / "pyproject.toml"
    bad.write_text(bad.read_text() + 'colour = "blue"\n')
    out = cli("build", "serve.py:Greeter", cwd=proj)
    assert out.returncode == 2 and "unknown [tool.ociforge] settings: colour" in out.stderr


def test_readme_example_builds_both_platforms(tmp_path, cli, tool):
    out = cli("example", "--to", f"oci:{tmp_path / 'out'}:example", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "needs lib" not in out.stderr  # the library check passes it, with no warning
    assert "push it:" in out.stdout and "run it:" in out.stdout
    raw = json.loads(tool("skopeo", "inspect", "--raw", f"oci:{tmp_path / 'out'}:example").stdout)
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == ["amd64", "arm64"]
    img = open_source(f"oci:{tmp_path / 'out'}:example", platform="linux/amd64")
    with serving(img, tmp_path / "rootfs") as url:
        import requests

        got = requests.post(f"{url}/predict", json=[[5.1, 3.5, 1.4, 0.2]]).json()["prediction"]
        assert got == ["setosa"]


SCRIPT = """
from helpers import scale

OFFSET = 3


def shift(x):
    return x + OFFSET


def predict(x):
    return scale(shift(x))
"""


@pytest.mark.parametrize("epoch", ["1700000000", None], ids=["SOURCE_DATE_EPOCH", "no-epoch"])
def test_same_script_in_two_folders_builds_one_digest(tmp_path, cli, monkeypatch, epoch):
    """``ociforge build /abs/path/model.py:predict`` of the same files in two folders (other file
    times, one second apart) gives one digest: the pickle records the script's path relative to
    its folder, not the building machine's absolute path."""
    if epoch is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    digests, layouts = [], []
    for n, folder in enumerate(("one", "elsewhere/two")):
        proj = tmp_path / folder / "proj"
        proj.mkdir(parents=True)
        (proj / "model.py").write_text(SCRIPT)
        (proj / "helpers.py").write_text("def scale(x):\n    return 2 * x\n")
        for f in ("model.py", "helpers.py"):
            os.utime(proj / f, (5000 + n * 77777, 5000 + n * 77777))
        out = cli(
            "build", f"{proj / 'model.py'}:predict", "--test-sample", "1",
            "--to", f"oci:{proj / 'out'}:m", "--json", cwd=proj,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        digests.append(json.loads(out.stdout)["digest"])
        layouts.append(proj / "out")
        if n == 0:
            time.sleep(1)
    assert digests[0] == digests[1]
    img = open_source(f"oci:{layouts[1]}:m", platform="linux/amd64")
    # the bytecode of what starts, the runtime, the user's code (helpers.py), the model
    for desc in img.layers[-4:]:
        with img.open_layer(desc) as f, gzip.open(f) as tar_bytes:
            assert str(tmp_path).encode() not in tar_bytes.read(), desc.digest
    for blob in (layouts[1] / "blobs" / "sha256").iterdir():
        if blob.stat().st_size < 64 << 10:  # manifests, configs, the index
            assert str(tmp_path).encode() not in blob.read_bytes(), blob.name


def test_every_setting_the_build_reads_is_accepted(tmp_path):
    """``run`` reads ``check_libraries`` from [tool.ociforge]; an unlisted setting is refused
    as unknown before it is read, so each setting the command reads must be listed."""
    import ast
    import inspect

    from ociforge.cli import build as cli_build

    tree = ast.parse(inspect.getsource(cli_build))
    read = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "s"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert "check_libraries" in read
    assert read <= set(cli_build.SETTINGS)
    (tmp_path / "pyproject.toml").write_text("[tool.ociforge]\ncheck_libraries = false\n")
    assert cli_build.project_settings(tmp_path) == {"check_libraries": False}
