"""Wheels fetched in the background while the layers are written (a cold build's download no
longer comes before every layer): the biggest start first, a layer waits for its own wheels
only, each wheel is fetched once, errors are those of an up-front fetch, and an offline build
still checks every wheel before any work."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from ociforge.builder.build import _wheel_files
from ociforge.builder.cachestep import LazyWheels
from ociforge.errors import DigestMismatch, NotFound
from ociforge.python.lock import Lock, LockedWheel
from ociforge.python.target import Target
from ociforge.python.wheelcache import Fetching, WheelCache, fetch


def _wheel(tmp_path: Path, name: str, size: int, *, sha: str | None = None) -> LockedWheel:
    data = name.encode() * size
    path = tmp_path / "src" / f"{name}-1-py3-none-any.whl"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    digest = sha or hashlib.sha256(data).hexdigest()
    return LockedWheel(name, "1", path.name, path.as_uri(), digest, len(data))


def test_biggest_start_first_and_errors_follow_the_lock(tmp_path):
    cache = WheelCache(tmp_path / "wheels")
    started: list[str] = []
    real = cache.get

    def get(w, *a):
        started.append(w.name)
        return real(w, *a)

    cache.get = get
    small, medium, big = (_wheel(tmp_path, n, s) for n, s in (("a", 10), ("b", 100), ("c", 1000)))
    got = Fetching([small, medium, big], cache, jobs=1).paths([small, big])
    assert started == ["c", "b", "a"]
    assert [p.read_bytes() for p in got] == [b"a" * 10, b"c" * 1000]

    # two bad wheels: the one first in the lock is reported (as fetch() does), though the
    # bigger one, started first, failed first
    bad = _wheel(tmp_path, "d", 50, sha="0" * 64)
    gone = LockedWheel("e", "1", "e-1-py3-none-any.whl", (tmp_path / "nope.whl").as_uri(),
                       "1" * 64, 5000)  # fmt: skip
    with pytest.raises(DigestMismatch, match="d-1-py3-none-any.whl"):
        Fetching([small, bad, gone], cache, jobs=1).paths([gone])
    with pytest.raises(DigestMismatch, match="d-1-py3-none-any.whl"):
        fetch([small, bad, gone], cache)
    with pytest.raises(NotFound, match="nope.whl"):
        fetch([small, gone], cache)


def test_a_layer_waits_for_its_own_wheels_only(tmp_path):
    """One thread fetching a slow wheel does not hold up another asking for a different one,
    and a wheel asked for by two threads at once is fetched once."""
    a, b = _wheel(tmp_path, "a", 10), _wheel(tmp_path, "b", 10)
    b_done = threading.Event()
    calls: list[list[str]] = []
    seen: dict[str, bool] = {}

    def slow(ws):
        calls.append([w.name for w in ws])
        if ws[0].name == "a":
            seen["b first"] = b_done.wait(60)  # set only once b's caller has its file
        return [Path(w.url[len("file://") :]) for w in ws]

    files = LazyWheels([a, b], slow)
    out: dict[str, list[Path]] = {}
    t1 = threading.Thread(target=lambda: out.setdefault("a", files.only([a])))
    t1.start()
    while not calls:  # a's fetch is under way
        threading.Event().wait(0.01)
    t2 = threading.Thread(target=lambda: out.setdefault("a2", files.only([a])))
    t2.start()
    out["b"] = files.only([b])
    b_done.set()
    t1.join()
    t2.join()
    assert seen == {"b first": True}
    assert calls == [["a"], ["b"]]  # a once, though asked twice
    assert out["a"] == out["a2"] and out["a"][0].name == a.filename
    assert files.fetched and list(files) == [out["a"][0], out["b"][0]]


def test_a_failed_fetch_is_raised_to_each_waiter_and_tried_again(tmp_path):
    a = _wheel(tmp_path, "a", 10)
    tries = []

    def flaky(ws):
        tries.append(1)
        if len(tries) == 1:
            raise NotFound("a: HTTP 503")
        return [Path(w.url[len("file://") :]) for w in ws]

    files = LazyWheels([a], flaky)
    with pytest.raises(NotFound, match="HTTP 503"):
        files.only([a])
    assert not files.fetched
    assert files.only([a])[0].name == a.filename and len(tries) == 2


def _lock(wheels: list[LockedWheel]) -> Lock:
    target = Target.from_json(
        {"platform": "linux/amd64", "python": "3.11", "implementation": "cp", "libc": "glibc 2.36"}
    )
    return Lock(target=target, packages=wheels)


def test_offline_checks_every_wheel_up_front_online_fetches_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("OCIFORGE_CACHE", str(tmp_path / "cache"))
    a, b = _wheel(tmp_path, "a", 10), _wheel(tmp_path, "b", 20)
    lock = _lock([a, b])
    WheelCache().path_for(a).parent.mkdir(parents=True)
    WheelCache().path_for(a).write_bytes(b"a" * 10)
    with pytest.raises(NotFound, match=r"b-1-py3-none-any.whl .*build is offline"):
        _wheel_files({"t": lock}, offline=True, on_demand=False)  # before any layer
    behind = _wheel_files({"t": lock}, offline=False, on_demand=False)["t"]
    assert isinstance(behind, LazyWheels)
    assert [p.read_bytes() for p in behind] == [b"a" * 10, b"b" * 20]
    offline = _wheel_files({"t": lock}, offline=True, on_demand=False)["t"]
    assert [Path(p).name for p in offline] == [a.filename, b.filename]
