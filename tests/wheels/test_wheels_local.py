"""Resolve, lock, cache and install with hermetic tiny wheels (no network): markers per target,
missing wheels, identical locks, RECORD/INSTALLER/scripts/bytecode, reproducible layers, offline."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile

import pytest

from ociforge.errors import NotFound
from ociforge.oci.blobstore import BlobStore
from ociforge.python.install import install_entries, wheel_layers
from ociforge.python.lock import dumps, loads, read_lockfile
from ociforge.python.resolve import IndexSettings, NoWheel, resolve
from ociforge.python.target import debian_target
from ociforge.python.wheelcache import WheelCache, fetch

AMD, ARM = debian_target("linux/amd64"), debian_target("linux/arm64")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ociforge", *args], capture_output=True, text=True)


def layer_files(store: BlobStore, layer) -> dict[str, tarfile.TarInfo]:
    with (
        store.open_blob(layer.digest) as f,
        tarfile.open(fileobj=io.BytesIO(gzip.decompress(f.read()))) as tf,
    ):
        return {m.name: m for m in tf.getmembers()}


def layer_bytes(store: BlobStore, layer, name: str) -> bytes:
    with (
        store.open_blob(layer.digest) as f,
        tarfile.open(fileobj=io.BytesIO(gzip.decompress(f.read()))) as tf,
    ):
        return tf.extractfile(name).read()


def test_marker_lands_only_in_arm64(local_options):
    locks = resolve(["top"], [AMD, ARM], local_options)
    assert locks[AMD].names() == ["helper", "top"]
    assert locks[ARM].names() == ["armonly", "helper", "top"]
    assert locks[ARM].get("armonly").requested_by == ("top",)
    assert locks[ARM].get("top").requested_by == ("<requirements>",)
    arch_specific = resolve(["native==0.5"], [AMD, ARM], local_options)
    assert "x86_64" in arch_specific[AMD].get("native").filename
    assert "aarch64" in arch_specific[ARM].get("native").filename


def test_lock_is_identical_across_runs(local_options):
    a = dumps(resolve(["top", "native"], [AMD, ARM], local_options))
    b = dumps(resolve(["top", "native"], [ARM, AMD], local_options))
    assert a == b
    again = loads(a)
    assert dumps(again) == a
    p = again[ARM].get("armonly")
    assert p.size and len(p.sha256) == 64 and p.url.startswith("file://")


def test_no_aarch64_wheel_names_package_version_target_and_alternatives(local_options, tmp_path):
    with pytest.raises(NoWheel) as e:
        resolve(["onlyx86==1.0"], [AMD, ARM], local_options)
    msg = str(e.value)
    assert "onlyx86" in msg and "1.0" in msg and "linux/arm64" in msg
    assert "x86_64" in msg  # what exists instead
    with pytest.raises(NoWheel) as e2:
        resolve(["sdistonly"], [AMD], local_options)
    assert "sdistonly" in str(e2.value) and "py2" in str(e2.value)


def test_cli_lock_writes_nothing_on_failure(links, tmp_path):
    out = tmp_path / "ociforge.lock"
    args = ["--no-pip-config", "--no-index", "-f", str(links), "-o", str(out)]
    r = run_cli("lock", *args, "onlyx86==1.0")
    assert r.returncode == 2 and "onlyx86 1.0 has no wheel for target linux/arm64" in r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())
    r = run_cli("lock", *args, "top")
    assert r.returncode == 0, r.stderr
    locks = read_lockfile(out)
    assert {t.key for t in locks} == {AMD.key, ARM.key}
    r = run_cli("plan", "--lock", str(out))
    assert r.returncode == 0 and "armonly" in r.stdout


def test_install_entries_record_scripts_bytecode(links):
    whl = next(links.glob("helper-1.2-*.whl"))
    entries = {e.path: e for e in install_entries(whl, AMD, bytecode=True)}
    sp = "opt/ociforge/site-packages"
    assert entries[f"{sp}/helper-1.2.dist-info/INSTALLER"].data == b"ociforge\n"
    script = entries["opt/ociforge/bin/helper-cli"]
    assert script.data.startswith(b"#!/usr/bin/python3.11\n") and script.mode == 0o755
    assert b"from helper import main" in script.data
    data_script = entries["opt/ociforge/bin/helper-sh"]
    assert data_script.data.startswith(b"#!/usr/bin/python3.11\n")
    pyc = entries[f"{sp}/helper/__pycache__/main.cpython-311.pyc"].data
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked (PEP 552)
    record = entries[f"{sp}/helper-1.2.dist-info/RECORD"].data.decode()
    assert "../bin/helper-cli,sha256=" in record
    assert "helper/__pycache__/main.cpython-311.pyc,sha256=" in record
    assert "helper-1.2.dist-info/INSTALLER,sha256=" in record
    assert "helper-1.2.dist-info/RECORD,," in record
    # a different interpreter path goes into the shebangs
    other = debian_target("linux/amd64", "trixie")
    e2 = {e.path: e for e in install_entries(whl, other, bytecode=False)}
    assert e2["opt/ociforge/bin/helper-cli"].data.startswith(b"#!/usr/bin/python3.13\n")
    assert not any(p.endswith(".pyc") for p in e2)


def test_layers_reproducible_shared_and_offline(local_options, tmp_path):
    locks = resolve(["top", "native"], [AMD, ARM], local_options)
    cache = WheelCache(tmp_path / "wheels")
    store = BlobStore(tmp_path / "store")
    amd = wheel_layers(locks[AMD], AMD, store, cache=cache)
    first = cache.stats.downloaded
    assert first == 3  # helper, native (x86_64), top
    arm = wheel_layers(locks[ARM], ARM, store, cache=cache)
    assert cache.stats.downloaded == first + 2  # only armonly and the aarch64 native

    def helper_layer(layers):
        (lyr,) = [x for x in layers if "helper" in x.descriptor.annotations["org.ociforge.wheels"]]
        return lyr.digest

    assert helper_layer(amd) == helper_layer(arm)  # a pure wheel's layer: the same on both
    # the pure layers differ only by armonly, so compare a pure-only lock across arches
    pure = resolve(["helper"], [AMD, ARM], local_options)
    la = wheel_layers(pure[AMD], AMD, store, cache=cache)
    lb = wheel_layers(pure[ARM], ARM, store, cache=cache)
    assert [x.digest for x in la] == [x.digest for x in lb]
    # the same wheels give the same digests in a fresh store; nothing is downloaded again
    before = cache.stats.downloaded
    again = wheel_layers(locks[ARM], ARM, BlobStore(tmp_path / "store2"), cache=cache, offline=True)
    assert [x.digest for x in again] == [x.digest for x in arm]
    assert cache.stats.downloaded == before
    files = layer_files(store, amd[0])
    assert all(m.uid == 0 and m.mtime == 0 for m in files.values())


def test_cache_verifies_on_use(local_options, tmp_path):
    lock = resolve(["helper"], [AMD], local_options)[AMD]
    cache = WheelCache(tmp_path / "wheels")
    (path,) = fetch(lock, cache)
    path.write_bytes(b"rotten")
    with pytest.raises(NotFound):
        fetch(lock, cache, offline=True)  # the bad file is dropped, and offline cannot refetch
    (again,) = fetch(lock, cache)
    assert again.read_bytes() != b"rotten" and cache.stats.downloaded == 2


def test_cache_hashes_a_file_once_and_again_when_it_changed(local_options, tmp_path, monkeypatch):
    """A verified wheel is not hashed again while its identity holds (a rebuild reads no wheel
    bytes); a write to it, even one that keeps its size and puts its mtime back, moves its ctime,
    and it is hashed again and dropped."""
    import os
    import time

    from ociforge.python import wheelcache as wc

    lock = resolve(["helper"], [AMD], local_options)[AMD]
    cache = WheelCache(tmp_path / "wheels")
    (path,) = fetch(lock, cache)
    hashed = []
    real = wc.sha256_file
    monkeypatch.setattr(wc, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert cache.cached(lock.packages[0]) == path and hashed == []  # hashed as it downloaded
    assert cache.cached(lock.packages[0]) == path and hashed == []
    (cache.root / ".verified" / lock.packages[0].sha256).unlink()
    assert cache.cached(lock.packages[0]) == path and len(hashed) == 1  # no stamp: hashed
    assert cache.cached(lock.packages[0]) == path and len(hashed) == 1  # then remembered
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size
    time.sleep(0.01)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime put back
    assert cache.cached(lock.packages[0]) is None and len(hashed) == 2
    assert not path.exists()


def test_wheel_layers_are_remembered(tmp_path, monkeypatch):
    """A second install of the same wheels reuses the remembered layer: nothing is rewritten."""
    from ociforge.oci.blobstore import BlobStore
    from ociforge.python import install as install_mod
    from ociforge.python.lock import Lock, LockedWheel
    from ociforge.python.target import Target
    from tests.wheels.wheelmaker import make_wheel

    whl = make_wheel(tmp_path, "memo-demo")
    import hashlib

    sha = hashlib.sha256(whl.read_bytes()).hexdigest()
    target = Target.make("linux/arm64")
    lock = Lock(
        target=target,
        packages=[
            LockedWheel(
                name="memo-demo",
                version="1.0",
                filename=whl.name,
                url=whl.as_uri(),
                sha256=sha,
                size=whl.stat().st_size,
            )
        ],
    )
    store = BlobStore(tmp_path / "store")
    first = install_mod.wheel_layers(lock, target, store, paths=[whl])
    calls = []
    real = install_mod.write_layer
    monkeypatch.setattr(
        install_mod, "write_layer", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    second = install_mod.wheel_layers(lock, target, store, paths=[whl])
    assert [layer.digest for layer in second] == [layer.digest for layer in first]
    assert calls == []
    # a different epoch is a different layer, and is written
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    third = install_mod.wheel_layers(lock, target, store, paths=[whl])
    assert calls and third[0].diff_id != first[0].diff_id


def test_resolution_is_reused_within_its_ttl(tmp_path, monkeypatch):
    """A rebuild resolves nothing; OCIFORGE_RESOLVE_TTL=0 resolves every time."""
    from ociforge.python import resolve as resolve_mod
    from ociforge.python.target import Target
    from tests.wheels.wheelmaker import make_wheel

    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "ttl-demo", "1.0")
    monkeypatch.setenv("OCIFORGE_CACHE", str(tmp_path / "cache"))
    opts = resolve_mod.ResolveOptions(
        use_pip_config=False,
        index=resolve_mod.IndexSettings(no_index=True, find_links=[str(links)]),
    )
    target = Target.make("linux/arm64")
    assert not resolve_mod.remembered(["ttl-demo"], [target], opts)
    first = resolve_mod.resolve(["ttl-demo"], [target], opts)[target]
    assert resolve_mod.remembered(["ttl-demo"], [target], opts)
    make_wheel(links, "ttl-demo", "2.0")  # a newer release appears
    calls = []
    real = resolve_mod.resolve_one
    monkeypatch.setattr(
        resolve_mod, "resolve_one", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = resolve_mod.resolve(["ttl-demo"], [target], opts)[target]
    assert calls == [] and again.packages[0].version == first.packages[0].version == "1.0"
    monkeypatch.setenv("OCIFORGE_RESOLVE_TTL", "0")
    assert not resolve_mod.remembered(["ttl-demo"], [target], opts)
    fresh = resolve_mod.resolve(["ttl-demo"], [target], opts)[target]
    assert calls == [1] and fresh.packages[0].version == "2.0"


def test_pyc_bytes_do_not_depend_on_the_process(tmp_path):
    """marshal's default format flags objects by reference count, which varies with what a process
    has imported; the .pyc ociforge writes must be the same whatever ran before."""
    import json as _json
    import subprocess
    import sys

    src = tmp_path / "m.py"
    src.write_text(
        "import json\nNAMES = ['decoder', 'encoder', 'loads']\ndef f(x):\n    return json.dumps(x)\n"
    )
    code = (
        "import hashlib, sys\n"
        "if sys.argv[1] == 'busy':\n"
        "    import json.decoder, json.encoder, email.parser, decimal  # noqa\n"
        "from ociforge.python.install import compile_pyc\n"
        f"print(hashlib.sha256(compile_pyc(open({str(src)!r}, 'rb').read(), '/m.py')).hexdigest())\n"
    )
    out = [
        subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, check=True
        ).stdout
        for mode in ("quiet", "busy")
    ]
    assert out[0] == out[1] and len(out[0].strip()) == 64
    del _json


def test_unannotated_resolution_same_wheels_and_still_names_parents(tmp_path, monkeypatch):
    """annotate=False (what a build asks for) skips the second uv run: the same wheels, no
    requested_by; a wrong-variant problem is still explained with who pulled the library in."""
    from dataclasses import replace

    from ociforge.python.resolve import ResolutionError, ResolveOptions, remembered
    from tests.wheels.wheelmaker import make_wheel

    monkeypatch.setenv("OCIFORGE_CACHE", str(tmp_path / "cache"))
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "helper", "1.0")
    make_wheel(links, "top", "1.0", requires=("helper",))
    make_wheel(links, "gpu-thing", "2.0", requires=("nvidia-cublas-cu12",))
    make_wheel(links, "nvidia-cublas-cu12", "12.4.5")
    opts = ResolveOptions(
        IndexSettings(no_index=True, find_links=[str(links)]), use_pip_config=False
    )
    plain = replace(opts, annotate=False)

    full = resolve(["top"], [AMD], opts)[AMD]
    assert not remembered(["top"], [AMD], plain)  # a memo of its own: it holds less
    bare = resolve(["top"], [AMD], plain)[AMD]
    assert [(w.filename, w.sha256) for w in bare.packages] == [
        (w.filename, w.sha256) for w in full.packages
    ]
    assert full.get("helper").requested_by == ("top",)
    assert all(w.requested_by == () for w in bare.packages)
    with pytest.raises(ResolutionError) as e:
        resolve(["gpu-thing"], [AMD], plain)
    assert "gpu-thing 2.0 is a CUDA build here" in str(e.value)
    assert "nvidia-cublas-cu12" in str(e.value)


def test_a_wheel_of_many_small_files_is_never_all_in_memory(tmp_path):
    """96 MiB in 3,072 files of 32 KiB (none of them "large") installed into a layer in a child
    process: its peak RSS stays well below the wheel's installed size, and the layer holds every
    file's bytes (streamed from the wheel while the layer is written)."""
    from wheelmaker import make_wheel

    files = {
        f"bulk/part{i // 256}/f{i:04d}.dat": (b"%06d" % i) * ((32 << 10) // 6) + b"\n"
        for i in range(3072)
    }
    wheel = make_wheel(tmp_path / "w", "bulk", files=files)
    code = (
        "import sys\n"
        "from ociforge.oci.blobstore import BlobStore\n"
        "from ociforge.python.install import install_entries\n"
        "from ociforge.oci.layer import write_layer\n"
        "from ociforge.python.target import debian_target\n"
        f"entries = install_entries({str(wheel)!r}, debian_target('linux/amd64'), bytecode=False)\n"
        f"layer = write_layer(entries, BlobStore({str(tmp_path / 's')!r}), 'zstd')\n"
        "print(layer.digest)\n"
        "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    digest, peak_kib = out.stdout.split()
    installed = sum(len(d) for d in files.values())
    assert installed > 95 << 20
    assert int(peak_kib) < 90 * 1024, f"peak RSS {peak_kib} KiB for {installed >> 20} MiB of files"
    import zstandard

    with (BlobStore(tmp_path / "s").open_blob(digest) as raw,
          tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(raw), mode="r|") as tf):  # fmt: skip
        seen = {}
        for m in tf:
            if m.isfile() and "/bulk/part" in m.name:
                seen[m.name.split("site-packages/", 1)[1]] = tf.extractfile(m).read()
    assert seen == files


@pytest.fixture(scope="module")
def cuda_links(tmp_path_factory):
    """A package whose [cuda] extra pulls a plugin that pulls CUDA libraries (as jax[cuda12]
    does), a +cu121 build, and a CPU-only package."""
    from wheelmaker import make_wheel

    d = tmp_path_factory.mktemp("cuda-links")
    make_wheel(d, "nvidia-cuda-nvrtc-cu12", "12.4.127")
    make_wheel(d, "nvidia-cublas-cu12", "12.4.5", requires=("nvidia-cuda-nvrtc-cu12",))
    make_wheel(d, "gpuplugin", "1.0", requires=("nvidia-cublas-cu12",))
    make_wheel(d, "gpukit", "1.0", requires=('gpuplugin; extra == "cuda"',))
    make_wheel(d, "torchy", "2.0+cu121")
    make_wheel(d, "cpuonly", "1.0")
    return d


def _hermetic(links) -> list[str]:
    return ["--no-pip-config", "--no-index", "-f", str(links), "--platform", "linux/amd64"]


def test_cuda_builds_with_no_variant_named_take_the_cuda_variant(cuda_links, tmp_path):
    """No --variant: a resolution that pulls CUDA builds means CUDA was asked for; plan and lock
    take the variant and say so in one line."""
    r = run_cli("plan", *_hermetic(cuda_links), "gpukit[cuda]==1.0")
    assert r.returncode == 0, r.stderr
    note = r.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("linux/amd64: no variant named"), r.stderr
    assert "nvidia-cublas-cu12" in note[0] and "taking variant cu12" in note[0]
    assert "linux/amd64 cp311 glibc_2_36 cu12" in r.stdout and "gpuplugin" in r.stdout

    r = run_cli("plan", *_hermetic(cuda_links), "torchy==2.0+cu121")
    assert r.returncode == 0, r.stderr
    assert "torchy 2.0+cu121" in r.stderr and "taking variant cu121" in r.stderr
    assert "linux/amd64 cp311 glibc_2_36 cu121" in r.stdout

    out = tmp_path / "cuda.lock"
    r = run_cli("lock", *_hermetic(cuda_links), "-o", str(out), "gpukit[cuda]==1.0")
    assert r.returncode == 0, r.stderr
    assert "taking variant cu12" in r.stderr
    (lock,) = read_lockfile(out).values()
    assert lock.target.variant == "cu12" and "nvidia-cuda-nvrtc-cu12" in lock.names()

    r = run_cli("plan", *_hermetic(cuda_links), "cpuonly==1.0")  # no CUDA builds: cpu, silently
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "linux/amd64 cp311 glibc_2_36 cpu" in r.stdout


def test_a_named_variant_still_refuses_builds_of_another(cuda_links):
    """--variant cpu with CUDA builds, and a CUDA variant with builds for another CUDA: refused,
    naming the packages (the one that pulls the libraries in, through other CUDA libraries)."""
    r = run_cli("plan", *_hermetic(cuda_links), "--variant", "cpu", "gpukit[cuda]==1.0")
    assert r.returncode == 2
    assert (
        "gpuplugin 1.0 is a CUDA build here: it pulls in 2 CUDA libraries "
        "(nvidia-cublas-cu12, nvidia-cuda-nvrtc-cu12)" in r.stderr
    ), r.stderr
    assert "<requirements>" not in r.stderr
    r = run_cli("plan", *_hermetic(cuda_links), "--variant", "cpu", "nvidia-cublas-cu12")
    assert r.returncode == 2
    assert "the requirements name 2 CUDA libraries" in r.stderr and "<requirements>" not in r.stderr
    r = run_cli("plan", *_hermetic(cuda_links), "--variant", "cu11", "gpukit[cuda]==1.0")
    assert r.returncode == 2
    assert "nvidia-cublas-cu12 12.4.5 is built for CUDA 12, not 11" in r.stderr, r.stderr
    r = run_cli("plan", *_hermetic(cuda_links), "--variant", "cu118", "torchy==2.0+cu121")
    assert r.returncode == 2 and "cu118" in r.stderr and "torchy" in r.stderr, r.stderr


def _wheel(name: str, size: int, pure: bool = True):
    from ociforge.python.lock import LockedWheel

    tag = "py3-none-any" if pure else "cp311-cp311-manylinux_2_17_x86_64"
    return LockedWheel(name, "1.0", f"{name}-1.0-{tag}.whl", "", "0" * 64, size)


def test_one_more_package_changes_one_layer_of_the_plan():
    """Adding a small package (``six``) adds its own layer and leaves every other layer's wheels as
    they were, so only that layer is written and pushed; so too past the per-wheel cap, where
    small wheels share layers by a stable bucket of their name."""
    from ociforge.python.install import plan_layers
    from ociforge.python.lock import Lock
    from ociforge.python.target import Target

    target = Target.make("linux/amd64")
    wheels = [_wheel("numpy", 20 << 20, False), _wheel("markupsafe", 30_000, False)]
    wheels += [_wheel(n, 50_000) for n in ("flask", "click", "jinja2", "werkzeug", "blinker")]

    def groups(ws, most=64):
        return [tuple(w.name for w in g.wheels) for g in plan_layers(Lock(target, ws), most=most)]

    before, after = groups(wheels), groups([*wheels, _wheel("six", 11_000)])
    assert set(after) - set(before) == {("six",)}
    assert set(before) <= set(after)
    many = [_wheel(f"pkg{i:03d}", 1000) for i in range(150)]
    before, after = groups(many, most=20), groups([*many, _wheel("six", 11_000)], most=20)
    assert len(before) <= 20 and len(after) <= 20
    changed = set(after) - set(before)
    assert len(changed) == 1 and "six" in next(iter(changed))
    assert len(set(before) - set(after)) <= 1
