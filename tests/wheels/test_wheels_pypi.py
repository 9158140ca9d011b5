"""Against the real indexes (pip.conf + PyPI): scikit-learn for amd64 and arm64, torch plans.

The amd64 tree is run with this machine's Python 3.11 (x86_64, glibc 2.36: the bookworm target);
the arm64 tree is checked by its ELF headers.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ociforge.oci.blobstore import BlobStore
from ociforge.python.install import wheel_layers
from ociforge.python.lock import dumps
from ociforge.python.resolve import ResolutionError, ResolveOptions, resolve
from ociforge.python.target import debian_target
from ociforge.python.wheelcache import WheelCache
from ociforge.transports.transport import open_source

pytestmark = pytest.mark.slow
PYTHON = "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else sys.executable
AMD, ARM = debian_target("linux/amd64"), debian_target("linux/arm64")
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # EM_X86_64, EM_AARCH64


def unpack(store: BlobStore, layers, dest: Path) -> Path:
    for lyr in layers:
        with store.open_blob(lyr.digest) as f, tarfile.open(fileobj=f, mode="r|gz") as tf:
            tf.extractall(dest, filter="tar")
    return dest


def elf_machine(path: Path) -> int:
    head = path.open("rb").read(20)
    assert head[:4] == b"\x7fELF", path
    return int.from_bytes(head[18:20], "little")


# The installed version: the same wheels the model-build tests need, downloaded once per session.
SKLEARN = f"scikit-learn=={importlib.metadata.version('scikit-learn')}"


@pytest.fixture(scope="module")
def sklearn(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sklearn")
    locks = resolve([SKLEARN], [AMD, ARM])
    # The session's shared wheel cache: the model-build tests fetch the same wheels.
    cache, store = WheelCache(), BlobStore(tmp / "store")
    layers = {t: wheel_layers(locks[t], t, store, cache=cache) for t in (AMD, ARM)}
    return locks, cache, store, layers, tmp


def test_sklearn_layers_hold_the_right_machine_code(sklearn):
    locks, cache, store, layers, tmp = sklearn
    assert set(locks[ARM].names()) >= {"scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"}
    for t in (AMD, ARM):
        root = unpack(store, layers[t], tmp / f"root-{t.platform.architecture}")
        sos = list(root.rglob("*.so"))
        assert len(sos) > 50
        assert {elf_machine(p) for p in sos} == {ELF_MACHINE[t.platform.architecture]}
    pure = {lyr.digest for lyr in layers[AMD]} & {lyr.digest for lyr in layers[ARM]}
    assert pure  # the pure-Python wheels' layer is the same blob on both platforms


def test_sklearn_amd64_tree_imports_and_fits(sklearn):
    _, _, store, layers, tmp = sklearn
    site = tmp / "root-amd64" / "opt/ociforge/site-packages"
    if not site.is_dir():  # the ELF test unpacks it; unpack here when run on its own
        unpack(store, layers[AMD], tmp / "root-amd64")
    code = (
        "import sklearn, numpy as np; from sklearn.linear_model import LogisticRegression;"
        "X = np.arange(40.0).reshape(20, 2); y = (X[:, 0] > 20).astype(int);"
        "print(sklearn.__file__, LogisticRegression().fit(X, y).score(X, y))"
    )
    r = subprocess.run(
        [PYTHON, "-s", "-c", code],
        env={"PYTHONPATH": str(site), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert r.returncode == 0, r.stderr
    assert str(site) in r.stdout and r.stdout.strip().endswith("1.0")


def test_second_run_same_lock_downloads_nothing_offline_works(sklearn):
    locks, cache, store, layers, tmp = sklearn
    again = resolve([SKLEARN], [ARM, AMD])
    assert dumps(again) == dumps(locks)
    before = cache.stats.downloaded
    rebuilt = wheel_layers(again[ARM], ARM, BlobStore(tmp / "store2"), cache=cache, offline=True)
    assert cache.stats.downloaded == before
    assert [x.digest for x in rebuilt] == [x.digest for x in layers[ARM]]


def test_cuda_plan_lists_nvidia_wheels_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    locks = resolve(["torch==2.5.1"], [debian_target("linux/amd64", variant="cu124")])
    (lock,) = locks.values()
    nvidia = [p for p in lock.packages if p.name.startswith("nvidia-")]
    assert len(nvidia) >= 10 and all(p.size and p.size > 50_000 for p in nvidia)
    assert lock.total_size > 2_000_000_000
    used = sum(f.stat().st_size for f in (tmp_path / "uv").rglob("*") if f.is_file())
    assert used < 50_000_000  # metadata only, not the 3 GB of wheels
    with pytest.raises(ResolutionError) as e:
        resolve(["torch==2.5.1"], [debian_target("linux/amd64", variant="cpu")], ResolveOptions())
    assert "torch 2.5.1 is a CUDA build" in str(e.value) and "nvidia-cudnn-cu12" in str(e.value)
    cpu = resolve(["torch==2.13.0+cpu"], [debian_target("linux/amd64", variant="cpu")])
    assert not any(p.name.startswith("nvidia-") for lk in cpu.values() for p in lk.packages)


def test_jax_cuda_plan_takes_the_cuda_variant_when_none_is_named(cli):
    """``ociforge plan 'jax[cuda12]==0.4.35'`` (metadata only, nothing downloaded): no variant
    named, so the CUDA builds it resolves to make it a cu12 plan, said in one line; with
    ``--variant cpu`` it is refused, naming the package that pulls the libraries in."""
    r = cli("plan", "jax[cuda12]==0.4.35", "--platform", "linux/amd64")
    assert r.returncode == 0, r.stderr
    (note,) = r.stderr.strip().splitlines()
    assert "jax-cuda12-plugin" in note and "taking variant cu12" in note
    assert "linux/amd64 cp311 glibc_2_36 cu12" in r.stdout and "nvidia-cudnn-cu12" in r.stdout
    r = cli("plan", "jax[cuda12]==0.4.35", "--platform", "linux/amd64", "--variant", "cpu")
    assert r.returncode == 2
    assert "jax-cuda12-plugin 0.4.35 is a CUDA build here" in r.stderr
    assert "nvidia-cuda-nvrtc-cu12" in r.stderr and "<requirements>" not in r.stderr


def test_build_takes_the_cuda_variant_of_what_resolved(tmp_path, cli):
    """``ociforge build`` with a CUDA library in the requirements and no --gpu builds the cu12
    variant (model.json records it) and says so; ``--gpu cpu`` refuses it."""
    (tmp_path / "model.py").write_text("def predict(x):\n    return x\n")
    out = tmp_path / "out"
    r = cli(
        "build", "model.py:predict", "--requirement", "nvidia-nvtx-cu12==12.9.79",
        "--to", f"oci:{out}:m", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "linux/amd64: no variant named" in r.stderr and "taking variant cu12" in r.stderr
    img = open_source(f"oci:{out}:m", platform="linux/amd64")
    with img.open_layer(img.layers[-1]) as f, tarfile.open(fileobj=f, mode="r|gz") as tf:
        for member in tf:
            if member.name.endswith("model.json"):
                assert json.load(tf.extractfile(member))["build"]["gpu"] == "cu12"
                break
        else:
            pytest.fail("no model.json in the model layer")
    r = cli(
        "build", "model.py:predict", "--requirement", "nvidia-nvtx-cu12==12.9.79",
        "--gpu", "cpu", "--to", f"oci:{out}:cpu", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "nvidia-nvtx-cu12" in r.stderr, r.stderr
