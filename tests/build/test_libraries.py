"""The build's library check (ociforge.builder.libraries): the loader's search order over a base's
files and the wheels', startup modules fail the build and others warn, CUDA images leave the
driver's libraries to the host, and the check is off with check_libraries=False."""

from __future__ import annotations

import gzip
import io
import os
import sys
import textwrap
from pathlib import Path

import pytest

import ociforge
from ociforge.bases.basefiles import BaseFiles, Tree, base_files, scan
from ociforge.bases.contents import parse_contents
from ociforge.builder import libraries
from ociforge.builder.libraries import check_libraries, driver_provided, find_missing
from ociforge.errors import BuildError
from ociforge.python.lock import Lock, LockedWheel
from ociforge.python.target import Target
from ociforge.python.wheelcache import sha256_file
from ociforge.transports.transport import open_source
from tests.build.test_model_forms import load_source
from tests.support.elfmaker import make_elf
from tests.wheels.wheelmaker import make_wheel

TAG = "cp311-cp311-manylinux_2_17_x86_64"
SO = "cpython-311-x86_64-linux-gnu.so"
LIBDIR = "usr/lib/x86_64-linux-gnu"


def _base(**extra) -> BaseFiles:
    files = {f"{LIBDIR}/libc.so.6", f"{LIBDIR}/libm.so.6.0", "usr/bin/python3.11"}
    links = {"lib": "usr/lib", "lib64": "usr/lib64", f"{LIBDIR}/libm.so.6": "libm.so.6.0"}
    return BaseFiles(files | set(extra.get("files", ())), links, extra.get("ld_conf", {}))


def _wheel(tmp_path: Path, name: str, members: dict[str, bytes], variant: str = "cpu"):
    path = make_wheel(tmp_path, name, "1.0", tag=TAG, files=members)
    target = Target.make("linux/amd64", variant=variant)
    w = LockedWheel(name, "1.0", path.name, path.as_uri(), sha256_file(path))
    return target, Lock(target, [w]), [path]


def test_search_order_origin_symlinks_and_runpath(tmp_path):
    members = {
        # found: libc through /lib -> usr/lib; libm through a versioned symlink
        f"pkg/a.{SO}": make_elf(("libc.so.6", "libm.so.6")),
        # found beside it through RPATH $ORIGIN/../pkg.libs (auditwheel's layout)
        f"pkg/b.{SO}": make_elf(("libblas-1a2b.so",), rpath="$ORIGIN/../pkg.libs"),
        "pkg.libs/libblas-1a2b.so": make_elf(("libc.so.6",), soname="libblas-1a2b.so"),
        # RUNPATH present: RPATH is ignored, so its library is not found there
        f"pkg/c.{SO}": make_elf(("libhidden.so.3",), rpath="$ORIGIN/h", runpath="/nowhere"),
        "pkg/h/libhidden.so.3.txt": b"not a library",
    }
    target, lock, wheels = _wheel(tmp_path, "pkg", members)
    missing, notes = find_missing(target, lock, wheels, _base(), roots=[])
    assert [(m.module, m.library) for m in missing] == [(f"pkg/c.{SO}", "libhidden.so.3")]
    assert not notes
    # and with RPATH alone, the same library in $ORIGIN/h is found
    members[f"pkg/c.{SO}"] = make_elf(("libhidden.so.3",), rpath="$ORIGIN/h")
    members["pkg/h/libhidden.so.3"] = b"\0"  # a file of that name is enough for the loader's search
    target, lock, wheels = _wheel(tmp_path / "2", "pkg", members)
    assert find_missing(target, lock, wheels, _base(), roots=[]) == ([], [])


def test_ld_so_conf_directories(tmp_path):
    members = {f"pkg/v.{SO}": make_elf(("libvendor.so.1",))}
    target, lock, wheels = _wheel(tmp_path, "pkg", members)
    base = _base(files={"opt/vendor/lib/libvendor.so.1"})
    assert find_missing(target, lock, wheels, base, [])[0]
    conf = {
        "etc/ld.so.conf": "include /etc/ld.so.conf.d/*.conf\n",
        "etc/ld.so.conf.d/vendor.conf": "# vendor\n/opt/vendor/lib\n",
    }
    base = _base(files={"opt/vendor/lib/libvendor.so.1"}, ld_conf=conf)
    assert base.conf_dirs() == ["/opt/vendor/lib"]
    assert find_missing(target, lock, wheels, base, [])[0] == []


def test_startup_module_fails_the_build_naming_each_library(tmp_path):
    members = {f"glpkg/_gl.{SO}": make_elf(("libGL.so.1", "libEGL.so.1", "libc.so.6"))}
    target, lock, wheels = _wheel(tmp_path, "glpkg", members)
    base = _base()
    lookup = lambda _img, arch, libs: {"libGL.so.1": "libgl1"}  # noqa: E731
    with pytest.raises(BuildError) as err:
        _check(target, lock, wheels, base, ["glpkg.model"], lookup)
    msg = str(err.value)
    assert f"glpkg/_gl.{SO} needs libGL.so.1" in msg and "libEGL.so.1" in msg
    assert 'add system_packages=["libgl1"]' in msg and "check_libraries=False" in msg
    # not imported at start: one warning line per library, and the build goes on
    lines: list[str] = []
    missing = _check(target, lock, wheels, base, ["other"], lookup, lines.append)
    assert {m.library for m in missing} == {"libGL.so.1", "libEGL.so.1"}
    assert len(lines) == 2 and all(line.startswith("warning: linux/amd64: ") for line in lines)
    assert any("libGL.so.1" in line and 'add system_packages=["libgl1"]' in line for line in lines)


def _check(target, lock, wheels, base, roots, lookup, warn=None):
    old = libraries.base_files
    libraries.base_files = lambda _img: base
    try:
        return check_libraries(target, lock, wheels, None, roots, lookup=lookup, warn=warn)
    finally:
        libraries.base_files = old


def test_cuda_images_leave_driver_libraries_to_the_host(tmp_path):
    members = {f"cupkg/_k.{SO}": make_elf(("libcuda.so.1", "libnvidia-ml.so.1", "libc.so.6"))}
    target, lock, wheels = _wheel(tmp_path, "cupkg", members, variant="cu121")
    assert find_missing(target, lock, wheels, _base(), ["cupkg"]) == ([], [])
    target, lock, wheels = _wheel(tmp_path / "cpu", "cupkg", members)
    assert {m.library for m in find_missing(target, lock, wheels, _base(), [])[0]} == {
        "libcuda.so.1",
        "libnvidia-ml.so.1",
    }
    assert driver_provided("libnvidia-nvvm.so.4", "cu124")
    assert not driver_provided("libcudart.so.12", "cu124")  # the runtime comes in a wheel
    assert not driver_provided("libcuda.so.1", "cpu")


def test_dependencies_of_startup_wheels_are_startup_too(tmp_path):
    top = make_wheel(
        tmp_path, "toppkg", "1.0", tag="py3-none-any",
        requires=("deppkg>=1", "testonly; extra == 'test'", "winonly; sys_platform == 'win32'"),
    )  # fmt: skip
    dep = make_wheel(
        tmp_path, "deppkg", "1.0", tag=TAG, files={f"deppkg/x.{SO}": make_elf(("libX11.so.6",))}
    )
    other = make_wheel(
        tmp_path, "otherpkg", "1.0", tag=TAG, files={f"otherpkg/y.{SO}": make_elf(("libXt.so.6",))}
    )
    target = Target.make("linux/amd64")
    wheels = [top, dep, other]
    lock = Lock(target, [
        LockedWheel(w.name.split("-")[0], "1.0", w.name, w.as_uri(), sha256_file(w)) for w in wheels
    ])  # fmt: skip
    missing, _ = find_missing(target, lock, wheels, _base(), ["toppkg.api"])
    assert sorted((m.library, m.startup) for m in missing) == [
        ("libX11.so.6", True),  # toppkg requires deppkg: loaded at start
        ("libXt.so.6", False),  # nothing at start requires otherpkg
    ]


def test_foreign_architecture_is_a_note(tmp_path):
    members = {f"pkg/a.{SO}": make_elf(("libnothere.so",), machine="aarch64")}
    target, lock, wheels = _wheel(tmp_path, "pkg", members)
    missing, notes = find_missing(target, lock, wheels, _base(), ["pkg"])
    assert missing == [] and "not for amd64" in notes[0]


def test_base_scan_symlinks_whiteouts_and_cache(tmp_path):
    from ociforge.builder.assemble import Addition, assemble

    root = tmp_path / "root"
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu/libc.so.6").write_bytes(b"\0")
    (root / "usr/lib/x86_64-linux-gnu/libgone.so.1").write_bytes(b"\0")
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf.d/x.conf").write_text("/opt/x\n")
    os.symlink("usr/lib", root / "lib")
    img = assemble(None, [Addition(str(root), "/")], platforms=["linux/amd64"])
    found = scan(img)
    assert "usr/lib/x86_64-linux-gnu/libc.so.6" in found.files
    assert found.links["lib"] == "usr/lib"
    assert found.conf_dirs() == ["/opt/x"]
    tree = Tree(found.files, found.links)
    assert tree.resolve("/lib/x86_64-linux-gnu/libc.so.6") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert tree.resolve("/lib/x86_64-linux-gnu/libnope.so") is None
    assert base_files(img).files == found.files  # cached by the layer digests
    # a whiteout in a later layer hides the file
    from ociforge.bases.basefiles import _whiteout

    _whiteout(found, "usr/lib/x86_64-linux-gnu", ".wh.libgone.so.1")
    assert "usr/lib/x86_64-linux-gnu/libgone.so.1" not in found.files


def test_contents_index_lines():
    text = textwrap.dedent(
        """\
        usr/lib/x86_64-linux-gnu/libGL.so.1                     libs/libgl1
        usr/lib/x86_64-linux-gnu/libGL.so.1.7.0                 libs/libgl1
        usr/lib/x86_64-linux-gnu/nvidia/current/libGL.so.1      non-free/libs/libgl1-nvidia-glvnd-glx
        usr/share/doc/libGL.so.1                                doc/whatever
        usr/lib/x86_64-linux-gnu/libEGL.so.1                    libs/libegl1,libs/libegl1-alt
        """
    )
    raw = io.BytesIO(gzip.compress(text.encode()))
    with gzip.open(raw) as f:
        got = parse_contents(f, ["libGL.so.1", "libEGL.so.1", "libnone.so"])
    assert got == {"libEGL.so.1": "libegl1", "libGL.so.1": "libgl1"}


# ---------------------------------------------------------------------------------------------
# Through ociforge.build, on the default base


PLAIN_MODEL = """
    def predict(x):
        return x
"""


@pytest.fixture
def gl_links(tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "glneed", "1.0", tag=TAG, files={f"glneed/_gl.{SO}": make_elf(("libGL.so.1", "libc.so.6"))})  # fmt: skip
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    src = tmp_path / "hostpkgs"
    (src / "glneed").mkdir(parents=True)
    (src / "glneed" / "__init__.py").write_text(
        "class Model:\n    def predict(self, x):\n        return x\n"
    )
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.delitem(sys.modules, "glneed", raising=False)
    monkeypatch.setattr(
        libraries, "debian_packages", lambda img, arch, libs: {"libGL.so.1": "libgl1"}
    )
    return links


def test_build_fails_when_a_startup_module_needs_a_missing_library(tmp_path, gl_links):
    import glneed  # the host's copy: the pickle imports glneed, so the server does at start

    model = glneed.Model()
    with pytest.raises(BuildError) as err:
        ociforge.build(model, requirements=["glneed==1.0"], to=f"oci:{tmp_path / 'out'}:m")
    msg = str(err.value)
    assert f"glneed/_gl.{SO} needs libGL.so.1" in msg and 'add system_packages=["libgl1"]' in msg
    assert not (tmp_path / "out").exists()
    # check_libraries=False builds it
    result = ociforge.build(
        model, requirements=["glneed==1.0"], to=f"oci:{tmp_path / 'out'}:m", check_libraries=False
    )  # fmt: skip
    assert result.digest.startswith("sha256:")


def test_build_warns_for_a_module_not_imported_at_start(tmp_path, gl_links, capsys):
    ns = load_source(tmp_path, PLAIN_MODEL)
    out = f"oci:{tmp_path / 'out'}:m"
    result = ociforge.build(ns["predict"], requirements=["glneed==1.0"], to=out)
    err = capsys.readouterr().err
    assert f"warning: linux/amd64: glneed/_gl.{SO} needs libGL.so.1" in err
    assert err.count("needs libGL.so.1") == 1
    # the check only reads: the same image without it
    again = ociforge.build(
        ns["predict"], requirements=["glneed==1.0"], to=out, check_libraries=False
    )
    assert again.digest == result.digest
    cfg = open_source(out, platform="linux/amd64").config.config
    assert "NVIDIA_VISIBLE_DEVICES" not in cfg.env_dict()  # CPU images: no toolkit settings
    assert "dev.ociforge.cuda" not in cfg.labels


def test_check_runs_beside_the_wheel_layers_and_its_failure_writes_nothing(
    tmp_path, gl_links, monkeypatch
):
    """The check runs on its own thread while the wheel layers are written (it used to come
    after them); its failure is still the build's, raised before anything reaches ``to``."""
    import importlib
    import threading

    from ociforge.builder import cachestep

    build_module = importlib.import_module("ociforge.builder.build")
    seen = {}
    real_layers = build_module.wheel_layers

    def layers(*a, **k):
        out = real_layers(*a, **k)
        seen["layers done"] = True
        return out

    def failing_check(*a, **k):
        seen["check"] = threading.current_thread().name
        raise BuildError("linux/amd64: 1 shared library ... (the check's own message)")

    monkeypatch.setattr(build_module, "wheel_layers", layers)
    monkeypatch.setattr(cachestep, "check_libraries", failing_check)
    ns = load_source(tmp_path, PLAIN_MODEL)
    with pytest.raises(BuildError, match=r"\(the check's own message\)"):
        ociforge.build(ns["predict"], requirements=["glneed==1.0"], to=f"oci:{tmp_path / 'out'}:m")
    assert seen["check"].startswith("ociforge-check") and seen["layers done"]
    assert not (tmp_path / "out").exists()


def test_cuda_runtime_config():
    from ociforge.builder.config import CUDA_LABEL, runtime_config

    class _Img:
        class config:  # noqa: N801
            class config:  # noqa: N801
                @staticmethod
                def env_dict():
                    return {}

    cu = runtime_config(_Img, Target.make("linux/amd64", variant="cu121"), {"a": "b"})
    assert cu.env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert cu.env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert cu.labels[CUDA_LABEL] == "cu121" and cu.labels["a"] == "b"
    cpu = runtime_config(_Img, Target.make("linux/amd64"), {"a": "b"})
    assert "NVIDIA_VISIBLE_DEVICES" not in cpu.env and cpu.labels == {"a": "b"}


def test_cli_flag_turns_the_check_off(monkeypatch, tmp_path):
    from ociforge.cli import build as cli_build
    from ociforge.cli import build_parser

    seen = {}

    def fake_build(model, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr("ociforge.builder.build.build", fake_build)
    (tmp_path / "m.py").write_text("def predict(x):\n    return x\n")
    monkeypatch.chdir(tmp_path)
    for argv, want in ((["build", "m.py:predict"], True), (["build", "m.py:predict", "--no-check-libraries"], False)):  # fmt: skip
        args = build_parser().parse_args(argv)
        with pytest.raises(SystemExit):
            cli_build.run(args)
        assert seen["check_libraries"] is want


@pytest.mark.slow
def test_debian_contents_lookup_for_real():
    """The suite's signed Contents index names the package of a missing library (downloaded
    once, ~12 MB, and cached)."""
    from ociforge.bases.contents import mirror_of, packages_for

    got = packages_for(
        ["libGL.so.1", "libgomp.so.1"], mirror_of("python3.11-bookworm"), "bookworm", "arm64"
    )
    assert got == {"libGL.so.1": "libgl1", "libgomp.so.1": "libgomp1"}
