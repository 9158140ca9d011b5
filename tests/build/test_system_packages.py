"""system_packages (ociforge.bases.syspackages): Debian packages of the base's own suite, resolved
per platform from the signed index (dependencies in, the base's packages out), in one layer
directly above the base, the same digest for the same packages; what is refused, and when.

Small packages where the point needs no big ones: libbsd0 (120 kB) brings libmd0 (30 kB) and
needs libc6, which the base holds. The opencv showcase is tests/build/test_system_packages_opencv.py.
"""

from __future__ import annotations

import json
import tarfile

import pytest

import ociforge
from ociforge.bases import debian, syspackages
from ociforge.bases.base import default_base
from ociforge.errors import BuildError, InvalidInput, NotFound
from ociforge.model.imports import referenced_modules
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.image import ConfigChanges, append, open_layer_tar, store_source
from ociforge.oci.layer import Entry, write_layer
from ociforge.oci.platform import Platform
from ociforge.transports.transport import open_source, write_to
from tests.build.test_model_forms import load_source
from tests.conftest import run_cli

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
LIBDIR = "usr/lib/x86_64-linux-gnu"
PLAIN = """
    def predict(x):
        return x
"""


def _members(img, desc) -> dict[str, tarfile.TarInfo]:
    stream, raw = open_layer_tar(img, desc)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            return {ti.name.lstrip("./"): ti for ti in tar}
    finally:
        stream.close()
        raw.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One build with system_packages=["libbsd0"] (linux/amd64, zstd): (result, image, base)."""
    tmp = tmp_path_factory.mktemp("syspkg")
    ns = load_source(tmp, PLAIN)
    out = f"oci:{tmp / 'out'}:m"
    result = ociforge.build(ns["predict"], to=out, compression="zstd", system_packages=["libbsd0"])
    base = default_base("3.11", [AMD64])[AMD64]
    return result, open_source(out, platform="linux/amd64"), base, out


def test_one_layer_directly_above_the_base(small):
    result, img, base, _out = small
    n = len(base.layers)
    assert [d.digest for d in img.layers[:n]] == [d.digest for d in base.layers]
    ours = img.layers[n]
    first = result.layers["linux/amd64"][0]
    assert first["digest"] == ours.digest
    assert first["what"].startswith("system packages (Debian bookworm amd64): libbsd0")
    assert img.config.config.labels[syspackages.LABEL] == "libbsd0"
    members = _members(img, ours)
    # the package and its dependency, and a dpkg record each, as the base build writes them
    assert f"{LIBDIR}/libbsd.so.0.11.7" in members and f"{LIBDIR}/libmd.so.0.0.5" in members
    assert members[f"{LIBDIR}/libbsd.so.0"].issym()
    status = {k for k in members if k.startswith("var/lib/dpkg/status.d/")}
    assert status == {"var/lib/dpkg/status.d/libbsd0", "var/lib/dpkg/status.d/libmd0"}
    # libc6 is the base's: not again here; no /lib alias over the base's own
    assert not any("libc.so" in k for k in members)
    assert not {"lib", "bin", "sbin", "lib64"} & set(members)


def test_same_packages_same_layer_digest(small, tmp_path):
    """Resolved again and written into two empty stores (nothing memoized): the same digest as
    the build's; the names' order and repeats change nothing."""
    _result, img, base, _out = small
    bases = {AMD64: (base, "ociforge-base:python3.11")}
    lock = syspackages.plan(["libbsd0", "libbsd0"], bases)[AMD64]
    assert [p.name for p in lock.packages] == ["libbsd0", "libmd0"]
    digests = {
        syspackages.system_layer(lock, BlobStore(tmp_path / s), "zstd", 0).layer.digest
        for s in ("a", "b")
    }
    assert digests == {img.layers[len(base.layers)].digest}


def test_the_sbom_lists_them_with_the_base_packages(small):
    out = small[3]
    doc = json.loads(run_cli("sbom", out, "--platform", "linux/amd64").stdout)
    names = {p["name"] for p in doc["packages"]}
    assert {"libbsd0", "libmd0", "libc6", "python3.11-minimal"} <= names


def test_unknown_package_fails_before_any_download(tmp_path, monkeypatch):
    """An unknown name, or one with no build for a platform (msr-tools is x86 only), is refused
    naming the package, the suite and the platform, before any of the system packages' .deb
    files or any wheel is downloaded, and before anything is written."""
    fetched: list[str] = []
    monkeypatch.setattr(syspackages, "fetch_debs", lambda lock: fetched.append(lock.requested))
    monkeypatch.setattr("ociforge.builder.build.fetch", lambda *a, **k: fetched.append("wheels"))
    ns = load_source(tmp_path, PLAIN)
    out = tmp_path / "out"
    for names, platforms, where in (
        (["libbsd0", "no-such-package-x"], ["linux/amd64"], "linux/amd64"),
        (["libbsd0", "msr-tools"], ["linux/amd64", "linux/arm64"], "linux/arm64"),
    ):
        with pytest.raises(NotFound) as err:
            ociforge.build(ns["predict"], platforms=platforms, to=f"oci:{out}:m",
                           system_packages=names)  # fmt: skip
        msg = str(err.value)
        bad = names[1]
        assert f"'{bad}'" in msg and "bookworm" in msg and where in msg, msg
    assert fetched == [] and not out.exists()


def test_a_base_that_says_no_suite_is_refused(tmp_path):
    """Any image as the base: without a suite label the error says what ociforge would need;
    with one, its packages resolve against that suite (nothing installed: libc6 too)."""
    store = BlobStore(tmp_path / "store")
    layer = write_layer([Entry.file("usr/bin/python3.11", b"")], store)
    scratch = append(None, [layer], store_source(store), platform=AMD64, store=store)
    write_to(scratch, f"oci:{tmp_path / 'base'}:b")
    ns = load_source(tmp_path, PLAIN)
    with pytest.raises(BuildError) as err:
        ociforge.build(ns["predict"], base=f"oci:{tmp_path / 'base'}:b",
                       to=f"oci:{tmp_path / 'out'}:m", system_packages=["libbsd0"])  # fmt: skip
    msg = str(err.value)
    assert "does not say which Debian suite" in msg and syspackages.SUITE_LABEL in msg
    assert "Debian mirror" in msg and debian.DEFAULT_MIRROR in msg
    assert not (tmp_path / "out").exists()
    # a label is outside data: a recipe "name" that is a path to a file is not read
    evil = tmp_path / "evil.toml"
    evil.write_text('[debian]\nsuite = "bookworm"\nmirror = "http://evil.invalid"\npackages = []\n')
    labels = {syspackages.SUITE_LABEL: "bookworm", syspackages.RECIPE_LABEL: str(evil)}
    labelled = append(
        scratch, [], store_source(store), changes=ConfigChanges(labels=labels), store=store
    )
    src = syspackages.source_for(labelled, "labelled", AMD64)
    assert (src.suite, src.mirror) == ("bookworm", debian.DEFAULT_MIRROR)
    lock = syspackages.resolve(["libbsd0"], src, AMD64)
    assert {"libbsd0", "libmd0", "libc6"} <= {p.name for p in lock.packages}


def test_a_label_never_names_a_recipe_file(tmp_path, monkeypatch):
    """The library check's Contents lookup and system packages read the base recipe an image
    label names: only a recipe shipped with ociforge, never a path a hostile base puts there."""
    from ociforge.bases import base, contents

    monkeypatch.delenv("OCIFORGE_DEBIAN_MIRROR", raising=False)
    evil = tmp_path / "evil.toml"
    evil.write_text('[debian]\nsuite = "bookworm"\nmirror = "http://evil.invalid"\npackages = []\n')
    assert base.load_recipe(str(evil)).suite == "bookworm"  # a path is a recipe to load_recipe
    for value in (str(evil), "../evil", "evil.toml", ""):
        assert base.recipe_named_by_label(value) is None
        assert contents.mirror_of(value) == debian.DEFAULT_MIRROR
    assert base.recipe_named_by_label("python3.11-bookworm").suite == "bookworm"


def test_names_are_checked():
    assert syspackages.names_of("libgl1, libglib2.0-0 libgl1") == ("libgl1", "libglib2.0-0")
    for bad in ("libgl1;rm -rf /", "../x", "LibGL1", ""):
        with pytest.raises(InvalidInput):
            syspackages.names_of([bad])


def test_cli_flag_and_pyproject_setting(monkeypatch, tmp_path):
    from ociforge.cli import build as cli_build
    from ociforge.cli import build_parser

    seen = {}

    def fake_build(model, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr("ociforge.builder.build.build", fake_build)
    (tmp_path / "m.py").write_text("def predict(x):\n    return x\n")
    (tmp_path / "pyproject.toml").write_text('[tool.ociforge]\nsystem_packages = ["libxau6"]\n')
    monkeypatch.chdir(tmp_path)
    for argv, want in (
        (["build", "m.py:predict"], ["libxau6"]),
        (["build", "m.py:predict", "--system-package", "libgl1", "--system-package",
          "libglib2.0-0,libsm6"], ["libgl1", "libglib2.0-0", "libsm6"]),
    ):  # fmt: skip
        with pytest.raises(SystemExit):
            cli_build.run(build_parser().parse_args(argv))
        assert seen["system_packages"] == want


def test_every_module_a_pickle_subimports_is_seen(tmp_path):
    """cloudpickle pickles a function's module globals as subimport calls; after the first it
    reuses the memoized function (and often a memoized name): each module must still be seen,
    or the library check would not know it is imported at start."""
    ns = load_source(
        tmp_path,
        """
        import base64, json, zlib

        def predict(x):
            return json.dumps(base64.b64encode(zlib.compress(x)).decode())
        """,
    )
    import cloudpickle

    assert {"base64", "json", "zlib"} <= referenced_modules(cloudpickle.dumps(ns["predict"]))
