"""Wheel layers are deflated at their own level (cheaper than the compressor's default) and
remembered under it."""

from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path

from ociforge.oci.blobstore import BlobStore
from ociforge.oci.digest import of_bytes
from ociforge.python import install as install_mod
from ociforge.python.lock import Lock, LockedWheel
from ociforge.python.target import Target
from tests.wheels.wheelmaker import make_wheel

TARGET = Target.make("linux/amd64")


def _locked(whl: Path, name: str) -> LockedWheel:
    data = whl.read_bytes()
    return LockedWheel(
        name, "1.0", whl.name, whl.as_uri(), hashlib.sha256(data).hexdigest(), len(data)
    )


def _text(n: int, seed: int) -> bytes:
    """Compressible but not trivially so: words drawn at random (levels 1 and 5 part ways)."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghij klmnop", k=rng.randint(2, 9))) for _ in range(800)]
    return b" ".join(rng.choice(words) for _ in range(n // 5))


def test_wheel_layers_use_their_level_and_are_remembered_by_it(tmp_path, monkeypatch):
    """The gzip layer is written at WHEEL_LEVELS["gzip"]; the same wheel at another level is
    another layer (written anew, not the one remembered at the first level) with the same tar,
    and each level gives the same bytes again in a fresh store."""
    whl = make_wheel(tmp_path, "lvl-demo", files={"lvl_demo/data.txt": _text(400_000, 1)})
    lock = Lock(TARGET, [_locked(whl, "lvl-demo")])
    levels = []
    real = install_mod.write_layer
    monkeypatch.setattr(
        install_mod,
        "write_layer",
        lambda *a, **k: levels.append(k.get("level")) or real(*a, **k),
    )
    store = BlobStore(tmp_path / "store")
    (five,) = install_mod.wheel_layers(lock, TARGET, store, paths=[whl])
    assert levels == [install_mod.WHEEL_LEVELS["gzip"]] == [5]
    (again,) = install_mod.wheel_layers(lock, TARGET, BlobStore(tmp_path / "s2"), paths=[whl])
    assert again.digest == five.digest and len(levels) == 2  # deterministic in a fresh store

    monkeypatch.setitem(install_mod.WHEEL_LEVELS, "gzip", 1)
    (one,) = install_mod.wheel_layers(lock, TARGET, store, paths=[whl])
    assert levels[-1] == 1 and len(levels) == 3  # not the level-5 layer from the memo
    assert one.digest != five.digest and one.diff_id == five.diff_id  # same tar, other deflate
    with store.open_blob(one.digest) as a, store.open_blob(five.digest) as b:
        tar1, tar5 = gzip.decompress(a.read()), gzip.decompress(b.read())
    assert tar1 == tar5 and of_bytes(tar5) == five.diff_id


def test_zstd_wheel_layers_keep_the_default_level_and_key(tmp_path, monkeypatch):
    """zstd layers are written at the compressor's default (level None): their memo keys are the
    ones made before wheel levels existed, so layers remembered then are still found."""
    whl = make_wheel(tmp_path, "zs-demo")
    lock = Lock(TARGET, [_locked(whl, "zs-demo")])
    keys = []
    real = install_mod.memo_key
    monkeypatch.setattr(install_mod, "memo_key", lambda *p: keys.append(p) or real(*p))
    levels = []
    real_write = install_mod.write_layer
    monkeypatch.setattr(
        install_mod,
        "write_layer",
        lambda *a, **k: levels.append(k.get("level")) or real_write(*a, **k),
    )
    install_mod.wheel_layers(lock, TARGET, BlobStore(tmp_path / "store"), "zstd", paths=[whl])
    assert levels == [None]
    assert not any(isinstance(p, str) and p.startswith("level ") for p in keys[0])
