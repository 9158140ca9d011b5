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
