"""Pushes through a proxy that cuts connections, answers 503/429 and stalls.

The push must complete, every blob the registry keeps must match its digest, and at no moment
may a tag point at an image whose blobs or child manifests are not all there.
"""

import json
import threading

import pytest
import requests

from ociforge.errors import OciforgeError
from ociforge.oci.image import ImageIndex
from ociforge.transports.registry import remote as registry
from tests.registry.faultproxy import FaultProxy

ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"


def _complete(base: str, repo: str, ref: str) -> bool:
    """True when the tag resolves and everything below it is in the registry."""
    r = requests.get(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
    if r.status_code == 404:
        return True  # no tag yet: nothing to be incomplete
    doc = r.json()
    for child in doc.get("manifests", []):
        if not _complete(base, repo, child["digest"]):
            return False
    for blob in [doc.get("config")] + doc.get("layers", []) if "config" in doc else []:
        if requests.head(f"{base}/v2/{repo}/blobs/{blob['digest']}").status_code != 200:
            return False
    return r.status_code == 200


class TagWatcher:
    """Polls the tag while a push runs, recording any moment it pointed at an incomplete image."""

    def __init__(self, base: str, repo: str, tag: str) -> None:
        self.args = (base, repo, tag)
        self.bad = 0
        self.checks = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.checks += 1
            if not _complete(*self.args):
                self.bad += 1

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def test_push_survives_cuts_errors_and_stalls(http_registry, index_factory, fast_retry):
    idx = index_factory(size=1536 << 10)  # ~1.5 MiB layers: several chunks each
    rates = {"cut": 0.15, "cut_response": 0.05, "503": 0.08, "429": 0.05, "stall": 0.05}
    with (
        FaultProxy(http_registry.host, rates=rates, seed=7, stall_s=0.2) as proxy,
        TagWatcher(http_registry.url, "faults/multi", "1") as watch,
    ):
        res = registry.push(
            idx, f"{proxy.host}/faults/multi:1", retry=fast_retry, chunk_size=256 << 10, jobs=3
        )
    assert res.digest == idx.digest
    assert sum(proxy.counts.values()) >= 5, proxy.counts
    assert proxy.counts["cut"] >= 1
    assert watch.bad == 0 and watch.checks > 0
    assert http_registry.verify_blobs() >= 4
    back = registry.pull(http_registry.ref("faults/multi:1"))
    assert isinstance(back, ImageIndex)
    for _d, img in back.images():
        want = idx.select(img.platform)
        with img.open_layer(img.layers[0]) as f, want.open_layer(want.layers[0]) as g:
            assert f.read() == g.read()


def test_monolithic_uploads_restart_after_cuts(http_registry, image_factory, fast_retry):
    img = image_factory(size=512 << 10)
    with FaultProxy(http_registry.host, rates={"cut": 1.0}, max_faults=3, only=("PUT",)) as proxy:
        res = registry.push(img, f"{proxy.host}/faults/mono:1", retry=fast_retry)
    assert proxy.counts["cut"] == 3 and res.digest == img.digest
    assert http_registry.verify_blobs() > 0


def test_failed_push_leaves_no_tag(http_registry, image_factory, fast_retry):
    img = image_factory(size=512 << 10)
    proxy = FaultProxy(http_registry.host, rates={"cut": 1.0}, only=("PUT", "PATCH"))
    with proxy, pytest.raises(OciforgeError, match="attempts"):
        registry.push(img, f"{proxy.host}/faults/never:1", retry=fast_retry)
    assert proxy.counts["cut"] >= fast_retry.attempts
    assert http_registry.tags("faults/never") == []
    r = requests.get(http_registry.v2("faults/never/manifests/1"))
    assert r.status_code == 404 and json.loads(r.text)["errors"]


def test_chunked_upload_resumes_in_the_same_session(http_registry, image_factory, fast_retry):
    """A chunk refused with 503 is resent after asking the session where it stands (GET Range):
    one upload session for the whole blob, no byte sent twice beyond the refused chunks."""
    img = image_factory(size=2 << 20)
    with FaultProxy(http_registry.host, rates={"503": 0.4}, only=("PATCH",), seed=5) as proxy:
        res = registry.push(
            img, f"{proxy.host}/faults/resume:1", retry=fast_retry, chunk_size=256 << 10
        )
    layer = img.layers[0]
    posts = [p for m, p in proxy.requests if m == "POST"]
    status_checks = [p for m, p in proxy.requests if m == "GET" and "/blobs/uploads/" in p]
    assert proxy.counts["503"] >= 1
    assert len(posts) == 2  # one upload session per blob (config and layer): no restarts
    assert len(status_checks) == proxy.counts["503"]
    assert res.digest == img.digest
    assert layer.digest in http_registry.blob_digests("faults/resume")


def test_fault_on_the_first_chunk_does_not_lose_byte_zero(http_registry, image_factory, fast_retry):
    """The reference registry answers an empty session's status with ``Range: 0-0``, as it does
    for a one-byte one. A 503 on the first PATCH used to resume at byte 1 and end in
    DIGEST_INVALID; the ambiguous answer now starts the blob in a fresh session."""
    img = image_factory(size=1 << 20)
    with FaultProxy(http_registry.host, rates={"503": 1.0}, only=("PATCH",), max_faults=1) as proxy:
        res = registry.push(
            img, f"{proxy.host}/faults/first:1", retry=fast_retry, chunk_size=256 << 10
        )
    assert proxy.counts["503"] == 1 and res.digest == img.digest
    posts = [p for m, p in proxy.requests if m == "POST"]
    assert len(posts) == 3  # config, layer, and the layer again after the ambiguous status
    assert img.layers[0].digest in http_registry.blob_digests("faults/first")
    http_registry.verify_blobs()


@pytest.mark.parametrize("fault", ["corrupt", "upload_unknown"])
def test_refused_completion_starts_the_blob_again(http_registry, image_factory, fast_retry, fault):
    """DIGEST_INVALID (a byte changed on the way) or BLOB_UPLOAD_UNKNOWN when a blob is
    completed: the blob goes again in a new session, and the push succeeds."""
    img = image_factory(size=1 << 20)
    with FaultProxy(http_registry.host, rates={fault: 1.0}, only=("PUT",), max_faults=2) as proxy:
        res = registry.push(img, f"{proxy.host}/faults/refused-{fault}:1", retry=fast_retry)
    assert proxy.counts[fault] == 2 and res.digest == img.digest
    http_registry.verify_blobs()


def test_refusals_are_bounded_by_the_retry_policy(http_registry, image_factory, fast_retry):
    """A registry that refuses every completion: the push stops after the policy's attempts."""
    img = image_factory(size=256 << 10)
    with (
        FaultProxy(http_registry.host, rates={"corrupt": 1.0}, only=("PUT",)) as proxy,
        pytest.raises(OciforgeError, match="DIGEST_INVALID") as e,
    ):
        registry.push(img, f"{proxy.host}/faults/always-bad:1", retry=fast_retry)
    assert f"after {fast_retry.attempts} attempts" in str(e.value)
    puts = [p for m, p in proxy.requests if m == "PUT"]
    assert len(puts) <= 2 * fast_retry.attempts  # config and layer race; each is bounded
    assert http_registry.tags("faults/always-bad") == []


def test_upload_status_range_is_read_strictly():
    from ociforge.transports.registry.upload import stored_bytes

    assert stored_bytes("0-0", 10) is None  # empty or one byte: unknown
    assert stored_bytes("0-1", 10) == 2
    assert stored_bytes("bytes=0-9", 10) == 10
    assert stored_bytes("0-10", 10) is None  # past the blob's end
    assert stored_bytes("5-9", 10) is None
    assert stored_bytes("", 10) is None and stored_bytes(None, 10) is None
    assert stored_bytes("0-x", 10) is None
