"""Push and pull against the real reference registry: round trips, skips, mounts, chunks, errors."""

import os

import pytest
import requests

from ociforge.errors import DigestMismatch, InvalidInput, NotFound, OciforgeError
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.image import Image, ImageIndex, append, store_source
from ociforge.transports.registry import remote as registry
from ociforge.transports.registry.client import RegistryError


def test_round_trip_index_and_platform_selection(http_registry, index_factory):
    idx = index_factory()
    res = registry.push(idx, http_registry.ref("pp/multi:1"))
    assert res.digest == idx.digest and res.blobs_pushed == 4 and res.manifests_pushed == 3
    assert http_registry.tags("pp/multi") == ["1"]
    back = registry.pull(http_registry.ref("pp/multi:1"))
    assert isinstance(back, ImageIndex) and back.raw == idx.raw
    arm = registry.pull(http_registry.ref("pp/multi:1"), platform="linux/aarch64")
    assert isinstance(arm, Image) and str(arm.platform) == "linux/arm64"
    want = idx.select("linux/arm64")
    with arm.open_layer(arm.layers[0]) as f, want.open_layer(want.layers[0]) as g:
        assert f.read() == g.read()
    by_digest = registry.pull(http_registry.ref(f"pp/multi@{want.digest}"))
    assert by_digest.digest == want.digest
    with pytest.raises(NotFound, match="linux/s390x"):
        registry.pull(http_registry.ref("pp/multi:1"), platform="linux/s390x")


def test_pull_is_lazy_and_cached(http_registry, image_factory, tmp_path):
    img = image_factory(size=300 << 10)
    registry.push(img, http_registry.ref("pp/lazy:1"))
    cache = BlobStore(tmp_path / "cache")
    pulled = registry.pull(http_registry.ref("pp/lazy:1"), cache=cache)
    layer = img.layers[0]
    assert not cache.has(layer.digest) and pulled.source.downloaded == img.manifest.config.size
    with pulled.open_layer(layer) as f:
        assert len(f.read()) == layer.size
    assert cache.has(layer.digest)
    again = registry.pull(http_registry.ref("pp/lazy:1"), cache=cache)
    with again.open_layer(layer):
        pass
    assert again.source.downloaded == 0


def test_repush_uploads_nothing(http_registry, index_factory):
    idx = index_factory()
    registry.push(idx, http_registry.ref("pp/again:1"))
    res = registry.push(idx, http_registry.ref("pp/again:2"))
    assert res.bytes_uploaded == 0 and res.blobs_pushed == 0 and res.blobs_skipped == 4
    assert http_registry.tags("pp/again") == ["1", "2"]


def test_second_image_on_same_base_mounts_base_layers(http_registry, image_factory, store):
    base = image_factory(size=200 << 10)
    registry.push(base, http_registry.ref("pp/base:1"))
    pulled_base = registry.pull(http_registry.ref("pp/base:1"))
    from ociforge.oci.layer import Entry, write_layer

    layer = write_layer([Entry.file("app/model.bin", os.urandom(1000))], store)
    child = append(pulled_base, [layer], store_source(store), store=store)
    res = registry.push(child, http_registry.ref("pp/child:1"))
    assert res.blobs_mounted == 1  # the base layer, from pp/base, not re-uploaded
    assert res.blobs_pushed == 2  # new config and new layer
    assert res.bytes_uploaded == layer.descriptor.size + child.manifest.config.size
    assert pulled_base.source.downloaded == base.manifest.config.size  # base layer never pulled
    assert base.layers[0].digest in http_registry.blob_digests("pp/child")


def test_chunked_upload_honors_chunk_size(http_registry, image_factory):
    img = image_factory(size=3 << 20)
    before = len(http_registry.log_text())
    res = registry.push(img, http_registry.ref("pp/chunks:1"), chunk_size=256 << 10)
    assert res.blobs_pushed == 2
    assert http_registry.verify_blobs() > 0
    back = registry.pull(http_registry.ref("pp/chunks:1"))
    with back.open_layer(img.layers[0]) as f, img.open_layer(img.layers[0]) as g:
        assert f.read() == g.read()
    del before


def test_missing_repository_and_tag(http_registry, image_factory):
    registry.push(image_factory(), http_registry.ref("pp/exists:1"))
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN|NAME_UNKNOWN|404") as e:
        registry.pull(http_registry.ref("pp/exists:nope"))
    assert "pp/exists" in str(e.value)
    with pytest.raises(NotFound):
        registry.pull(http_registry.ref("pp/never-pushed:1"))


def test_unknown_host(no_credentials):
    with pytest.raises(OciforgeError, match="unknown host"):
        registry.pull("no-such-host.invalid/x:1")


def test_plain_http_only_for_loopback(no_credentials, fast_retry):
    # A non-loopback name for a local port: HTTPS only, so this fails without --insecure.
    with pytest.raises(OciforgeError):
        registry.pull("localhost.localdomain.invalid:1/x:1", retry=fast_retry)


def test_manifest_over_size_limit(http_registry, image_factory):
    img = image_factory()
    big = append(img, [], img.source, annotations={"huge": "x" * (5 << 20)})
    with pytest.raises(RegistryError, match="4.0 MiB") as e:
        registry.push(big, http_registry.ref("pp/big:1"))
    assert http_registry.host in str(e.value)
    assert http_registry.tags("pp/big") == []


def test_digest_reference_must_match(http_registry, image_factory):
    img = image_factory()
    with pytest.raises(InvalidInput, match="digest"):
        registry.push(img, http_registry.ref("pp/d@sha256:" + "0" * 64))


def test_corrupt_blob_on_pull_is_refused_and_not_kept(http_registry, image_factory, tmp_path):
    img = image_factory(size=100 << 10)
    registry.push(img, http_registry.ref("pp/corrupt:1"))
    layer = img.layers[0]
    data = http_registry._blob_root() / layer.digest[7:9] / layer.digest[7:] / "data"
    good = data.read_bytes()
    raw = bytearray(good)
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    try:
        cache = BlobStore(tmp_path / "cache")
        pulled = registry.pull(http_registry.ref("pp/corrupt:1"), cache=cache)
        with pytest.raises(DigestMismatch, match="not kept"):
            pulled.open_layer(layer)
        assert not cache.has(layer.digest)
        assert [p for p in cache.tmp_dir.iterdir()] == []
    finally:
        # the registry is the session's: a later test (any order, any worker) re-hashes every
        # blob it stores (verify_blobs), and must not find this one left corrupt
        data.write_bytes(good)


def test_download_resumes_with_range(http_registry, image_factory, tmp_path, fast_retry):
    """A download cut halfway continues from where it stopped (a Range request)."""
    from tests.registry.faultproxy import FaultProxy

    img = image_factory(size=2 << 20)
    registry.push(img, http_registry.ref("pp/resume:1"))
    with FaultProxy(http_registry.host, rates={}) as proxy:
        cache = BlobStore(tmp_path / "cache")
        pulled = registry.pull(f"{proxy.host}/pp/resume:1", cache=cache, retry=fast_retry)
        proxy.rates = {"cut_download": 1.0}
        proxy.max_faults = 1
        with pulled.open_layer(img.layers[0]) as f:
            assert len(f.read()) == img.layers[0].size
        assert proxy.counts["cut_download"] == 1, proxy.requests
        assert ("GET-range", f"/v2/pp/resume/blobs/{img.layers[0].digest}") in proxy.ranges, (
            proxy.requests
        )


def test_authorization_never_follows_redirect_to_another_host(http_registry, image_factory):
    """Blob GETs redirected elsewhere lose the Authorization header on the way."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = {}

    class Other(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen["auth"] = self.headers.get("Authorization")
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()

    class Redirector(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/v2/":
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="r"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            seen["first"] = self.headers.get("Authorization")
            self.send_response(307)
            self.send_header("Location", f"http://localhost:{other.server_address[1]}/blob")
            self.send_header("Content-Length", "0")
            self.end_headers()

    red = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    threading.Thread(target=red.serve_forever, daemon=True).start()
    try:
        with pytest.raises(NotFound):
            registry.pull(f"127.0.0.1:{red.server_address[1]}/x/y:1", auth=("u", "secret"))
        assert seen["first"] and seen["first"].startswith("Basic ")
        assert seen["auth"] is None
    finally:
        red.shutdown()
        other.shutdown()


def test_retry_after_is_honored(http_registry, image_factory, monkeypatch):
    from tests.registry.faultproxy import FaultProxy

    slept = []
    import ociforge.transports.registry.client as rc

    monkeypatch.setattr(rc.time, "sleep", lambda s: slept.append(s))
    img = image_factory()
    with FaultProxy(http_registry.host, rates={"429": 1.0}, max_faults=2, retry_after="7") as proxy:
        res = registry.push(img, f"{proxy.host}/pp/retry-after:1")
    assert res.digest == img.digest and proxy.counts["429"] == 2
    assert slept.count(7.0) == 2


def test_error_carries_registry_code(http_registry):
    r = requests.get(http_registry.v2("pp/none/tags/list"))
    assert r.status_code == 404
    with pytest.raises(RegistryError) as e:
        registry.pull(http_registry.ref("pp/none:1"))
    assert e.value.code in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN") and e.value.status == 404


def test_locally_built_images_on_one_base_mount_from_the_first_push(
    http_registry, image_factory, store, tmp_path, monkeypatch
):
    """No pull at all: the first push is remembered, so the second image mounts the shared base."""
    monkeypatch.setenv("OCIFORGE_CACHE", str(tmp_path / "fresh-cache"))
    base = image_factory(size=300 << 10)
    from ociforge.oci.layer import Entry, write_layer

    first = append(
        base, [write_layer([Entry.file("app/a", b"a")], store)], store_source(store), store=store
    )
    second = append(
        base, [write_layer([Entry.file("app/b", b"b")], store)], store_source(store), store=store
    )
    registry.push(first, http_registry.ref("local/first:1"))
    res = registry.push(second, http_registry.ref("local/second:1"))
    assert res.blobs_mounted == 1  # the base layer
    assert res.bytes_uploaded < 300 << 10
    assert base.layers[0].digest in http_registry.blob_digests("local/second")
    # a location that went stale costs nothing: the registry answers with an upload instead
    monkeypatch.setenv("OCIFORGE_CACHE", str(tmp_path / "other-cache"))
    from ociforge.transports.registry import bloblocations

    bloblocations.record(http_registry.host, "local/nowhere", [first.layers[-1].digest])
    third = registry.push(first, http_registry.ref("local/third:1"))
    assert third.blobs_mounted + third.blobs_pushed == 3
