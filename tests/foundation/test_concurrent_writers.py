"""Several processes writing one OCI layout, one oci-archive or one cache at once, and what a
writer killed with SIGKILL leaves behind.

Writers are real processes (fork), bounded by count and by time; the results are read back by
skopeo and umoci.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ociforge.oci.blobstore import BlobStore
from ociforge.oci.image import append, store_source
from ociforge.oci.layer import Entry, write_layer
from ociforge.oci.layercache import memo_key, memoized
from ociforge.oci.platform import Platform
from ociforge.python.wheelcache import WheelCache
from ociforge.transports.archive import TarSource, write_oci_archive
from ociforge.transports.layout import list_tags, read_layout, write_layout
from tests.conftest import ROOT

AMD64 = Platform.parse("linux/amd64")
TAGS_EACH = 25
DEADLINE_S = 120


def _image(store: BlobStore, text: str):
    layer = write_layer([Entry(path=f"data/{text}", kind="file", data=text.encode())], store)
    return append(None, [layer], store_source(store), platform=AMD64, store=store)


def _tag_writer(kind: str, dest: str, who: str, cache: str, errors) -> None:
    store = BlobStore(cache)
    write = write_layout if kind == "oci" else write_oci_archive
    for i in range(TAGS_EACH):
        try:
            write(_image(store, f"{who}-{i}"), dest, f"{who}-{i}")
        except Exception as e:  # reported to the test, which names them all
            errors.put(f"{who}-{i}: {type(e).__name__}: {e}")


def _race(kind: str, dest: Path, cache: Path) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    procs = [
        ctx.Process(target=_tag_writer, args=(kind, str(dest), who, str(cache), errors))
        for who in ("a", "b")
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + DEADLINE_S
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            pytest.fail(f"a writer of {dest} did not finish in {DEADLINE_S} s")
        assert p.exitcode == 0
    found = []
    while not errors.empty():
        found.append(errors.get())
    return found


def _expected_tags() -> set[str]:
    return {f"{who}-{i}" for who in ("a", "b") for i in range(TAGS_EACH)}


def test_two_writers_of_one_layout_keep_every_tag(tmp_path, tool):
    """2 processes x 25 tags into one new layout: all 50 kept (before the lock: 34-43 of 50,
    and writers failed on each other's removed .tmp folder)."""
    dest = tmp_path / "layout"
    errors = _race("oci", dest, tmp_path / "cache")
    assert errors == []
    tags = list_tags(dest)
    assert len(tags) == 2 * TAGS_EACH and set(tags) == _expected_tags()
    assert sorted(p.name for p in dest.iterdir()) == ["blobs", "index.json", "oci-layout"]
    for tag in ("a-0", "b-24"):
        raw = json.loads(tool("skopeo", "inspect", "--raw", f"oci:{dest}:{tag}").stdout)
        assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    listed = tool("umoci", "ls", "--layout", dest).stdout.split()
    assert set(listed) == _expected_tags()
    tool("umoci", "unpack", "--rootless", "--image", f"{dest}:b-7", tmp_path / "bundle")
    assert (tmp_path / "bundle" / "rootfs" / "data" / "b-7").read_text() == "b-7"


def test_two_writers_of_one_archive_keep_every_tag(tmp_path, tool):
    """The same race into one oci-archive (before the lock: 26-27 of 50 kept, and readers of the
    old archive saw it replaced under them)."""
    dest = tmp_path / "images.tar"
    errors = _race("archive", dest, tmp_path / "cache")
    assert errors == []
    index = json.loads(TarSource(dest).read_member("index.json"))
    tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert len(tags) == 2 * TAGS_EACH and set(tags) == _expected_tags()
    cfg = json.loads(tool("skopeo", "inspect", "--config", f"oci-archive:{dest}:a-13").stdout)
    assert cfg["architecture"] == "amd64"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_first_writers_of_a_new_layout_do_not_refuse_it(tmp_path):
    """Writers that find a layout folder another writer is just creating wait for it rather than
    calling it 'a non-empty directory that is not an OCI layout'."""
    cache = tmp_path / "cache"
    for round_ in range(5):
        dest = tmp_path / f"layout-{round_}"
        ctx = multiprocessing.get_context("fork")
        errors = ctx.Queue()
        procs = [
            ctx.Process(target=_one_write, args=(str(dest), f"w{n}", str(cache), errors))
            for n in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(DEADLINE_S)
            assert p.exitcode == 0
        found = []
        while not errors.empty():
            found.append(errors.get())
        assert found == []
        assert sorted(list_tags(dest)) == ["w0", "w1", "w2", "w3"]


def _one_write(dest: str, tag: str, cache: str, errors) -> None:
    try:
        write_layout(_image(BlobStore(cache), tag), dest, tag)
    except Exception as e:
        errors.put(f"{tag}: {type(e).__name__}: {e}")


# --- a writer killed with SIGKILL ----------------------------------------------------------------

_KILLED_WRITER = r"""
import os, sys, time
from pathlib import Path
from ociforge.fsutil import atomic_write
from ociforge.oci.blobstore import BlobStore
from ociforge.python.lock import LockedWheel
from ociforge.python.wheelcache import WheelCache

what, target, fifo = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if what == "blob":  # a blob streaming into the layout's store from a source that stalls
    with open(fifo, "rb") as src:
        BlobStore(target).put_stream(src)
elif what == "index":  # index.json being replaced when the writer dies
    os.fsync = lambda fd: (print("ready", flush=True), time.sleep(600))
    atomic_write(target / "index.json", b"{}")
elif what == "wheel":  # a wheel download that stalls
    wheel = LockedWheel("w", "1", "w-1-py3-none-any.whl", "file://" + fifo, "0" * 64)
    WheelCache(target).get(wheel)
"""


def _start_writer(what: str, target: Path, tmp_path: Path) -> tuple[subprocess.Popen, object]:
    fifo = tmp_path / f"{what}.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, what, str(target), str(fifo)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    if what == "index":
        assert proc.stdout.readline().strip() == "ready"
        return proc, None
    feed = open(fifo, "wb")  # noqa: SIM115 - held open so the writer stalls mid-stream
    feed.write(b"x" * (256 << 10))
    feed.flush()
    return proc, feed


def _wait_for(paths, what: str) -> list[Path]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = paths()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"the writer never started its {what}")


def _staging(layout: Path, wheels: Path) -> dict[str, list[Path]]:
    return {
        "blob": sorted((layout / ".tmp").glob("blob-*")),
        "index": sorted(layout.glob(".index.json.*")),
        "wheel": sorted((wheels / ".tmp").glob(".dl-*")),
    }


def test_staging_of_a_killed_writer_is_removed_by_the_next_one(tmp_path):
    """SIGKILLed writers leave .tmp/blob-*, .index.json.* and .dl-*: the next writer of the
    layout (and the next user of the wheel cache) removes them, and never a live writer's."""
    layout, wheels = tmp_path / "layout", tmp_path / "wheels"
    cache = BlobStore(tmp_path / "cache")
    write_layout(_image(cache, "first"), layout, "first")
    writers = {what: _start_writer(what, layout if what != "wheel" else wheels, tmp_path)
               for what in ("blob", "index", "wheel")}  # fmt: skip
    (tmp_path / "live").mkdir()
    live = None
    try:
        for what in writers:
            _wait_for(lambda w=what: _staging(layout, wheels)[w], what)
        live = _start_writer("blob", layout, tmp_path / "live")  # this one stays alive
        _wait_for(lambda: len(_staging(layout, wheels)["blob"]) == 2, "second blob")
        live_file = _staging(layout, wheels)["blob"]
        for proc, _feed in writers.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        left = _staging(layout, wheels)
        assert all(left.values()), left  # what SIGKILL leaves

        write_layout(_image(cache, "second"), layout, "second")  # the next writer
        WheelCache(wheels)  # the next user of the wheel cache

        after = _staging(layout, wheels)
        assert after["index"] == [] and after["wheel"] == []
        assert len(after["blob"]) == 1 and after["blob"][0] in live_file  # the live one stays
        assert sorted(list_tags(layout)) == ["first", "second"]
        live[1].write(b"y" * 1000)
        live[1].close()
        assert live[0].wait(timeout=30) == 0  # the live writer finished its blob
        assert list((layout / ".tmp").glob("blob-*")) == []
        read_layout(layout, "second")
    finally:
        for proc, feed in [*writers.values(), *([live] if live else [])]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            if feed is not None and not feed.closed:
                with contextlib.suppress(BrokenPipeError):
                    feed.close()


def test_killed_archive_writer_leaves_nothing_for_the_next(tmp_path):
    """An oci-archive writer killed mid-write leaves its staging folder; the next writer of the
    archive removes it and keeps the archive's tags."""
    cache = BlobStore(tmp_path / "cache")
    dest = tmp_path / "a.tar"
    write_oci_archive(_image(cache, "one"), dest, "one")
    stale = tmp_path / ".a.tar.staging"
    (stale / "layout" / "blobs").mkdir(parents=True)  # as a killed writer leaves it
    fd_path = tmp_path / ".a.tar.k1ll3d_x"
    fd_path.write_bytes(b"half an archive")  # tar_directory's staging file, its writer dead
    write_oci_archive(_image(cache, "two"), dest, "two")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    index = json.loads(TarSource(dest).read_member("index.json"))
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "one",
        "two",
    ]


# --- two builds sharing one cache ------------------------------------------------------------

ROUNDS = 12


def _cache_user(cache: str, who: str, out: str, errors) -> None:
    """What a build does to the cache: layers (some the other build writes too, one big one
    streamed in chunks), the layer memo, configs; each round opens the store anew (as every
    command does), which sweeps staging files no live writer holds."""
    try:
        for i in range(ROUNDS):
            store = BlobStore(cache)
            shared = write_layer([Entry(path="shared", kind="file", data=b"s" * 4096)], store)
            big = write_layer(
                [Entry(path=f"big-{who}", kind="file", data=os.urandom(2 << 20))], store, "none"
            )
            key = memo_key("concurrent-test", i)
            memo = memoized(
                store,
                key,
                lambda i=i, s=store: write_layer([Entry(path=f"m{i}", kind="file", data=b"m")], s),
            )
            img = append(
                None, [shared, big, memo], store_source(store), platform=AMD64, store=store
            )
            write_layout(img, out, f"{who}-{i}")
    except Exception as e:
        errors.put(f"{who}: {type(e).__name__}: {e}")


def test_two_builds_sharing_one_cache(tmp_path):
    """Two processes writing layers, memo entries and images into one cache at once: every blob
    is whole, nothing a live writer was writing is swept, and no staging file is left."""
    cache = tmp_path / "cache"
    BlobStore(cache)
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    outs = {who: tmp_path / f"out-{who}" for who in ("a", "b")}
    procs = [
        ctx.Process(target=_cache_user, args=(str(cache), who, str(outs[who]), errors))
        for who in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(DEADLINE_S)
        assert not p.is_alive() and p.exitcode == 0
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    store = BlobStore(cache)
    for who, out in outs.items():
        assert sorted(list_tags(out)) == sorted(f"{who}-{i}" for i in range(ROUNDS))
        for i in range(ROUNDS):
            img = read_layout(out, f"{who}-{i}")
            for desc in img.layers:
                h = hashlib.sha256()
                with store.open_blob(desc.digest) as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                assert "sha256:" + h.hexdigest() == desc.digest
    assert list(store.tmp_dir.iterdir()) == []
