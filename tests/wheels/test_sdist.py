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


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sdist_build_warns_and_the_lock_pins_its_hash(tmp_path, monkeypatch, caplog):
    """Building an sdist runs its build backend here: one warning says so, naming the package;
    the lock records the sdist's sha256 and keeps it through a write and a read."""
    from ociforge.python.lock import dumps, loads

    links = tmp_path / "links"
    make_sdist(links, "pinsdist", "1.0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    with caplog.at_level("WARNING", logger="ociforge.python.sdist"):
        locks = resolve(["pinsdist==1.0"], [Target.make("linux/amd64")])
    warned = [r.getMessage() for r in caplog.records if "pinsdist" in r.getMessage()]
    assert len(warned) == 1 and "build backend" in warned[0] and "this machine" in warned[0]
    [lock] = locks.values()
    [wheel] = lock.packages
    assert wheel.sdist_sha256 == _sha256(links / "pinsdist-1.0.tar.gz")
    [again] = loads(dumps(locks)).values()
    assert again.packages[0].sdist_sha256 == wheel.sdist_sha256


def test_wheel_built_again_from_a_lock_checks_the_pinned_sdist(tmp_path, monkeypatch):
    """A lock used where its built wheel is missing builds it again from the sdist, which must
    still hash to the pinned sha256 (a swapped sdist is refused); the same sdist gives the same
    wheel bytes, so the lock's wheel hash holds too."""
    import shutil

    from ociforge.python.sdist import built_wheels_dir
    from ociforge.python.wheelcache import WheelCache, fetch

    links = tmp_path / "links"
    make_sdist(links, "againsdist", "1.0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    [lock] = resolve(["againsdist==1.0"], [Target.make("linux/amd64")]).values()
    [wheel] = lock.packages
    shutil.rmtree(built_wheels_dir() / "againsdist-1.0")
    [path] = fetch(lock, WheelCache(tmp_path / "cache1"))
    assert _sha256(path) == wheel.sha256

    shutil.rmtree(built_wheels_dir() / "againsdist-1.0")
    (links / "againsdist-1.0.tar.gz").unlink()
    shutil.rmtree(links.parent / "src-againsdist")
    make_sdist(links, "againsdist", "1.0")  # same name and version, other bytes (mtimes)
    assert _sha256(links / "againsdist-1.0.tar.gz") != wheel.sdist_sha256
    with pytest.raises(SdistBuildError, match="pins") as err:
        fetch(lock, WheelCache(tmp_path / "cache2"))
    assert wheel.sdist_sha256 in str(err.value)


def test_old_locks_without_sdist_hashes_still_read():
    from ociforge.python.lock import LockedWheel

    obj = {
        "name": "a",
        "version": "1",
        "filename": "a-1-py3-none-any.whl",
        "url": "https://x/a-1-py3-none-any.whl",
        "sha256": "0" * 64,
        "size": 1,
        "requested_by": [],
    }
    w = LockedWheel.from_json(obj)
    assert w.sdist_sha256 is None and w.to_json() == obj  # written back byte for byte
    with pytest.raises(Exception, match="sdist_sha256"):
        LockedWheel.from_json({**obj, "sdist_sha256": "nope"})
