"""The bytecode layer's import closure and its worker processes (no network, no images)."""

from __future__ import annotations

import sys

import pytest

from ociforge.oci.blobstore import BlobStore
from ociforge.python import bytecode
from ociforge.python._pycworker import compile_module, imports_of

SP = "opt/ociforge/site-packages"
TAG = sys.implementation.cache_tag


def _files(tree: dict[str, str]) -> dict:
    return {path: (lambda s=src: s.encode()) for path, src in tree.items()}


def test_imports_that_run_at_load_time():
    src = (
        "import os.path as p\n"
        "from . import sib, other\n"
        "from ..up.mod import *\n"
        "try:\n    import fast\nexcept ImportError:\n    fast = None\n"
        "if p:\n    from cond import x\n"
        "class K:\n    import inclass\n"
        "    def m(self):\n        import inmethod\n"
        "def f():\n    import lazy\n"
        "def __getattr__(name):\n    import pkg.sub as sub\n    return sub\n"
        "import typing\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import typeonly\n"
        "if typing.TYPE_CHECKING:\n    import typeonly2\nelse:\n    import runtime_alt\n"
        "if not TYPE_CHECKING:\n    import notchecking\n"
    )
    found = imports_of(compile(src, "m.py", "exec"))
    assert found == sorted(
        [
            (0, "os.path", ()),
            (1, "", ("sib", "other")),
            (2, "up.mod", ()),
            (0, "fast", ()),
            (0, "cond", ("x",)),
            (0, "inclass", ()),
            (0, "pkg.sub", ()),
            (0, "typing", ()),
            (0, "typing", ("TYPE_CHECKING",)),
            (0, "runtime_alt", ()),
            (0, "notchecking", ()),
        ]
    )


def test_closure_follows_load_time_imports_only():
    files = _files(
        {
            f"{SP}/app/__init__.py": "from .core import run\n",
            f"{SP}/app/core.py": "import helper\nfrom . import util\ndef run():\n    import never\n",
            f"{SP}/app/util.py": "from ..shadow import nothing\n",  # beyond the top: ignored
            f"{SP}/app/unused.py": "x = 1\n",
            f"{SP}/helper.py": "import json\n",
            f"{SP}/never.py": "x = 1\n",
            f"{SP}/shadow.py": "x = 1\n",
            f"{SP}/broken.py": "def (:\n",
            "opt/ociforge/runtime/srv/__init__.py": "import app\nimport broken\n",
        }
    )
    with bytecode.CompilePool(2) as pool:
        out = bytecode.startup_bytecode(files, ["opt/ociforge/runtime", SP], ["srv"], pool)
    assert sorted(out) == sorted(
        [
            f"opt/ociforge/runtime/srv/__pycache__/__init__.{TAG}.pyc",
            f"{SP}/app/__pycache__/__init__.{TAG}.pyc",
            f"{SP}/app/__pycache__/core.{TAG}.pyc",
            f"{SP}/app/__pycache__/util.{TAG}.pyc",
            f"{SP}/__pycache__/helper.{TAG}.pyc",
        ]
    )
    # each .pyc is the one this process would write: the workers change nothing
    src = files[f"{SP}/app/core.py"]()
    assert (
        out[f"{SP}/app/__pycache__/core.{TAG}.pyc"] == compile_module(src, f"/{SP}/app/core.py")[0]
    )


def test_search_path_order_and_packages_first():
    files = _files(
        {
            "first/mod.py": "A = 1\n",
            "second/mod.py": "import gone\n",
            "second/pkg.py": "import gone\n",
            "second/pkg/__init__.py": "B = 1\n",
            "second/gone.py": "x = 1\n",
        }
    )
    with bytecode.CompilePool(1) as pool:
        out = bytecode.startup_bytecode(files, ["first", "second"], ["mod", "pkg"], pool)
    assert sorted(out) == [
        f"first/__pycache__/mod.{TAG}.pyc",
        f"second/pkg/__pycache__/__init__.{TAG}.pyc",
    ]


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/true"])
def test_pool_without_workers_compiles_the_same(monkeypatch, executable):
    """Where sys.executable cannot run the worker (missing, or an embedding host that is not a
    Python) the modules are compiled in process, and no process is started per module."""
    files = _files({f"p/m{i}.py": f"import m{i + 1}\nV = {i}\n" for i in range(6)})
    with bytecode.CompilePool(2) as pool:
        expected = bytecode.startup_bytecode(files, ["p"], ["m0"], pool)
    monkeypatch.setattr(sys, "executable", executable)
    with bytecode.CompilePool(2) as pool:
        got = bytecode.startup_bytecode(files, ["p"], ["m0"], pool)
        started = len(pool._all)
    assert got == expected and len(got) == 6
    assert started <= 2


def test_layer_is_remembered(tmp_path):
    files = _files({"p/a.py": "import b\n", "p/b.py": "B = 1\n"})
    store = BlobStore(tmp_path / "store")
    first = bytecode.bytecode_layer(files, ["p"], ["a"], store, "gzip", key="k" * 64)
    calls = []
    again = bytecode.bytecode_layer(
        {"p/a.py": lambda: calls.append(1) or b""}, ["p"], ["a"], store, "gzip", key="k" * 64
    )
    assert again == first and calls == []
    assert bytecode.bytecode_layer({}, ["p"], ["a"], store, "gzip") is None


def test_compile_all_keeps_order():
    items = [(f"/m{i}.py", f"X = {i}\n".encode()) for i in range(20)] + [("/bad.py", b"def (")]
    out = list(bytecode.compile_all(items))
    assert [name for name, _ in out] == [name for name, _ in items]
    assert out[-1][1] is None and all(pyc for _, pyc in out[:-1])
    assert out[3][1] == compile_module(b"X = 3\n", "/m3.py")[0]


def _record_compiles(monkeypatch) -> list:
    """(file name, source) of every module a pool really compiles from now on."""
    compiled: list = []
    real = bytecode.CompilePool._in_worker
    monkeypatch.setattr(
        bytecode.CompilePool,
        "_in_worker",
        lambda self, name, src: compiled.append((name, src)) or real(self, name, src),
    )
    return compiled


def test_prewarm_from_the_host_changes_nothing_but_the_work(tmp_path, monkeypatch):
    """Compiling the installed copies while resolving: a module whose wheel bytes match is not
    compiled again; one that differs is compiled from the wheel; the output is the same."""
    host = tmp_path / "host-site"
    (host / "pkg").mkdir(parents=True)
    (host / "pkg" / "__init__.py").write_text("from . import same, changed\n")
    (host / "pkg" / "same.py").write_text("X = 1\n")
    (host / "pkg" / "changed.py").write_text("Y = 'host version'\n")
    monkeypatch.setattr(bytecode, "host_site_dirs", lambda: [str(host)])
    image = _files(
        {
            f"{SP}/pkg/__init__.py": "from . import same, changed\n",
            f"{SP}/pkg/same.py": "X = 1\n",
            f"{SP}/pkg/changed.py": "Y = 'wheel version'\n",
        }
    )
    with bytecode.CompilePool(2) as pool:
        expected = bytecode.startup_bytecode(image, [SP], ["pkg"], pool)

    compiled = _record_compiles(monkeypatch)
    with bytecode.CompilePool(2) as pool:
        bytecode.prewarm({}, [SP], SP, ["pkg"], pool, delay=0)
        assert len(compiled) == 3  # the host's three modules
        pool.stop_optional()
        compiled.clear()
        got = bytecode.startup_bytecode(image, [SP], ["pkg"], pool)
    assert got == expected
    assert compiled == [(f"/{SP}/pkg/changed.py", b"Y = 'wheel version'\n")]
    # a build whose resolution was quick (remembered) stops it before it starts
    compiled.clear()
    with bytecode.CompilePool(2) as pool:
        pool.stop_optional()
        bytecode.prewarm({}, [SP], SP, ["pkg"], pool)
    assert compiled == []


def test_host_pyc_gives_the_bytes_of_compiling(tmp_path):
    """from_cache: the .pyc Python keeps beside an installed module, renamed and re-marshalled,
    is byte for byte what compiling gives; it is used only where Python would load it."""
    import os
    import py_compile
    import random
    import sysconfig

    from ociforge.python._pycworker import from_cache

    # real-world code: 150 modules of the standard library and installed packages, copied and
    # given a __pycache__ .pyc the way an import writes one (so no machine state is assumed)
    roots = [sysconfig.get_path("stdlib"), sysconfig.get_path("purelib")]
    found = []
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            found += [os.path.join(dirpath, n) for n in names if n.endswith(".py")]
    found.sort()
    random.Random(7).shuffle(found)
    real = tmp_path / "real"
    real.mkdir()
    checked = 0
    for i, path in enumerate(found):
        with open(path, "rb") as f:
            src = f.read()
        copy = real / f"m{i}.py"
        copy.write_bytes(src)
        try:
            py_compile.compile(str(copy), doraise=True)
        except py_compile.PyCompileError:
            continue  # a file that does not compile for this Python (a test fixture)
        got = from_cache(src, "/usr/lib/python3/x.py", str(copy))
        assert got == compile_module(src, "/usr/lib/python3/x.py"), path
        checked += 1
        if checked == 150:
            break
    assert checked == 150

    mod = tmp_path / "m.py"
    mod.write_text("import os\nclass A:\n    def f(self):\n        return {'a', 'b', 'c'}\n")
    src = mod.read_bytes()
    assert from_cache(src, "/img/m.py", str(mod)) is None  # no .pyc yet
    py_compile.compile(str(mod), doraise=True)  # a timestamp .pyc, as an import writes it
    assert from_cache(src, "/img/m.py", str(mod)) == compile_module(src, "/img/m.py")
    os.utime(mod, (1, 1))  # the source looks newer: Python would recompile, so do we
    assert from_cache(src, "/img/m.py", str(mod)) is None
    py_compile.compile(
        str(mod), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH
    )
    assert from_cache(src, "/img/m.py", str(mod)) == compile_module(src, "/img/m.py")
    changed = src.replace(b"'c'", b"'d'")
    assert from_cache(changed, "/img/m.py", str(mod)) is None  # hash-based: the hash decides
    pyc = tmp_path / "__pycache__" / f"m.{sys.implementation.cache_tag}.pyc"
    pyc.write_bytes(b"\0\0\0\0" + pyc.read_bytes()[4:])  # another Python's magic number
    assert from_cache(src, "/img/m.py", str(mod)) is None


def test_prewarm_takes_the_host_pycs(tmp_path, monkeypatch):
    """With the host's __pycache__ in place the head start compiles nothing; the layer's
    bytes are the same as compiling everything."""
    import py_compile

    host = tmp_path / "host-site"
    (host / "pkg").mkdir(parents=True)
    sources = {"__init__.py": "from . import a, b\n", "a.py": "A = [1]\n", "b.py": "B = {2}\n"}
    for name, text in sources.items():
        (host / "pkg" / name).write_text(text)
        py_compile.compile(str(host / "pkg" / name), doraise=True)
    monkeypatch.setattr(bytecode, "host_site_dirs", lambda: [str(host)])
    image = _files({f"{SP}/pkg/{name}": text for name, text in sources.items()})
    with bytecode.CompilePool(2) as pool:
        expected = bytecode.startup_bytecode(image, [SP], ["pkg"], pool)

    compiled = _record_compiles(monkeypatch)
    with bytecode.CompilePool(2) as pool:
        bytecode.prewarm({}, [SP], SP, ["pkg"], pool, delay=0)
        pool.stop_optional()
        got = bytecode.startup_bytecode(image, [SP], ["pkg"], pool)
    assert compiled == []
    assert got == expected and len(got) == 3
