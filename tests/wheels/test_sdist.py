"""Pure-Python sdists become wheels on the host; sdists with compiled code are refused."""

from __future__ import annotations

import tarfile
import textwrap

import pytest

from ociforge.python.resolve import NoWheel, resolve
from ociforge.python.sdist import SdistBuildError
from ociforge.python.target import Target


def make_sdist(links, name: str, version: str, *, compiled: bool = False):
    src = links.parent / f"src-{name}"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "{version}"
    """)
    )
    if compiled:
        (src / name / "fast.c").write_text(
            textwrap.dedent("""
            #include <Python.h>
            static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "fast", NULL, -1, NULL};
            PyMODINIT_FUNC PyInit_fast(void) { return PyModule_Create(&m); }
        """)
        )
        (src / "setup.py").write_text(
            textwrap.dedent(f"""
            from setuptools import Extension, setup
            setup(ext_modules=[Extension("{name}.fast", ["{name}/fast.c"])])
        """)
        )
    links.mkdir(exist_ok=True)
    with tarfile.open(links / f"{name}-{version}.tar.gz", "w:gz") as tf:
        tf.add(src, arcname=f"{name}-{version}")


def test_pure_sdist_is_built_once_for_every_platform(tmp_path, monkeypatch):
    links = tmp_path / "links"
    make_sdist(links, "puresdist", "1.0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    locks = resolve(["puresdist==1.0"], [Target.make("linux/amd64"), Target.make("linux/arm64")])
    wheels = {lk.packages[0].filename for lk in locks.values()}
    shas = {lk.packages[0].sha256 for lk in locks.values()}
    assert wheels == {"puresdist-1.0-py3-none-any.whl"}
    assert len(shas) == 1  # the same wheel for both platforms


def test_sdist_with_compiled_code_is_refused(tmp_path, monkeypatch):
    links = tmp_path / "links"
    make_sdist(links, "fastsdist", "2.0", compiled=True)
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    with pytest.raises((SdistBuildError, NoWheel)) as err:
        resolve(["fastsdist==2.0"], [Target.make("linux/arm64")])
    assert "fastsdist" in str(err.value) and "platform-specific" in str(err.value)
