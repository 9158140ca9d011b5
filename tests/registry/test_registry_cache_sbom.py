"""A model-only rebuild with SBOMs on (the default) pushes little more than the model's layer.

Each platform image gets two SBOM documents (ociforge/supply/sbom.py): the *contents* document
(the base's .debs, the wheels: keyed by the base and the lock) and a small *image* document
that names it by sha256. A model-only rebuild gives the same contents bytes, so that blob is
already in the registry and is not pushed again; only the image documents (a few KiB) and the
small manifests are. Counted through a reverse proxy in front of a real registry, on a fresh
runner (empty HOME, XDG_CACHE_HOME and ociforge cache), as in test_registry_cache.py.
"""

from __future__ import annotations

import json

import pytest
import requests

from ociforge.supply import sbom
from ociforge.supply.place import fallback_tag
from tests.conftest import run_cli
from tests.support.countingproxy import CountingProxy
from tests.support.freshrunner import MODEL, build, fresh_runner_env, make_project, ok
from tests.support.registry import RegistryServer

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("sbom-cache-reg"), mode="http") as reg:
        yield reg


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("sbom-cache-project"))


def _sbom_artifacts(registry, repo: str, image_digest: str) -> dict[str, dict]:
    """The SBOM artifacts of one image, by part, from the registry's referrers tag."""
    resp = requests.get(
        registry.v2(f"{repo}/manifests/{fallback_tag(image_digest)}"),
        headers={"Accept": OCI_INDEX},
    )
    assert resp.status_code == 200, resp.text
    out = {}
    for entry in resp.json()["manifests"]:
        art = requests.get(
            registry.v2(f"{repo}/manifests/{entry['digest']}"), headers={"Accept": OCI_MANIFEST}
        ).json()
        out[art["annotations"]["org.ociforge.sbom.part"]] = art
    return out


def test_fresh_runner_model_only_rebuild_with_sboms_pushes_little(project, registry, tmp_path):
    repo = "team/sbom"
    previous = json.loads(ok(build(project, registry.ref(f"{repo}:1"))).stdout)
    assert set(previous["sboms"]) == {"linux/amd64", "linux/arm64"}
    (project / "model.py").write_text(MODEL.format(w="3.0"))
    try:
        with CountingProxy() as net, CountingProxy(upstream=registry.host) as reg:
            env = fresh_runner_env(tmp_path / "runner", net.url)
            proc = ok(build(project, f"{reg.host}/{repo}:2", env=env))  # SBOMs on: the default
            fresh = json.loads(proc.stdout)
            model_size = max(
                layer["size"] for p in fresh["layers"] for layer in fresh["layers"][p]
                if layer["what"] == "model"
            )  # fmt: skip
            biggest = sorted(reg.bodies.items(), key=lambda kv: -kv[1])[:8]
            assert 0 < reg.sent < model_size + (64 << 10), (reg.sent, model_size, biggest)
    finally:
        (project / "model.py").write_text(MODEL.format(w="2.0"))
    assert fresh["digest"] != previous["digest"]
    assert set(fresh["sboms"]) == {"linux/amd64", "linux/arm64"}
    for platform in ("linux/amd64", "linux/arm64"):
        before = _sbom_artifacts(registry, repo, _image_digest(registry, repo, previous, platform))
        after = _sbom_artifacts(registry, repo, _image_digest(registry, repo, fresh, platform))
        assert set(after) == {"contents", "image"}
        # the contents document is the same blob (not pushed again); the image document is new
        assert after["contents"]["layers"] == before["contents"]["layers"]
        assert after["contents"]["artifactType"] == sbom.SPDX_MEDIA_TYPE
        assert after["image"]["layers"][0]["digest"] != before["image"]["layers"][0]["digest"]
        assert after["image"]["artifactType"] == sbom.IMAGE_ARTIFACT_TYPES["spdx"]
        # the image document names that very blob by its sha256
        image_doc = requests.get(
            registry.v2(f"{repo}/blobs/{after['image']['layers'][0]['digest']}")
        ).content
        (ref,) = json.loads(image_doc)["externalDocumentRefs"]
        assert "sha256:" + ref["checksum"]["checksumValue"] == after["contents"]["layers"][0]["digest"]  # fmt: skip
        # and `ociforge sbom` still gives one complete document: the new image, every package
        doc = json.loads(
            ok(run_cli("sbom", registry.ref(f"{repo}:2"), "--platform", platform)).stdout
        )
        (image,) = [p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-image"]
        assert "sha256:" + image["checksums"][0]["checksumValue"] == _image_digest(
            registry, repo, fresh, platform
        )
        purls = {r["referenceLocator"] for p in doc["packages"] for r in p.get("externalRefs", [])}
        assert any(u.startswith("pkg:deb/debian/libc6@") for u in purls)
        assert any(u.startswith("pkg:pypi/flask@") for u in purls)


def _image_digest(registry, repo: str, result: dict, platform: str) -> str:
    """The platform image's manifest digest (the subject of its SBOMs), from the pushed index."""
    resp = requests.get(
        registry.v2(f"{repo}/manifests/{result['digest']}"), headers={"Accept": OCI_INDEX}
    )
    assert resp.status_code == 200, resp.text
    os_, arch = platform.split("/")
    (digest,) = [
        m["digest"]
        for m in resp.json()["manifests"]
        if m["platform"]["os"] == os_ and m["platform"]["architecture"] == arch
    ]
    return digest
