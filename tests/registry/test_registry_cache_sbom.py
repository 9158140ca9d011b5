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
from pathlib import Path

import pytest
import requests

from ociforge.supply import sbom
from ociforge.supply.place import fallback_tag
from tests.conftest import run_cli
from tests.support.countingproxy import CountingProxy
from tests.support.registry import RegistryServer

PLATFORMS = "linux/amd64,linux/arm64"
MODEL = """
WEIGHTS = [0.5, -0.25, {w}]


def predict(row):
    return sum(w * x for w, x in zip(WEIGHTS, row))
"""
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def ok(proc):
    if proc.returncode != 0:
        pytest.fail(f"exited {proc.returncode}:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("sbom-cache-reg"), mode="http") as reg:
        yield reg


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("sbom-cache-project")
    (d / "model.py").write_text(MODEL.format(w="2.0"))
    ok(run_cli("fetch", "--platform", PLATFORMS, "--lock", "ociforge.lock", cwd=d))
    return d


def _build(project: Path, to: str, *extra: str, env: dict | None = None):
    return run_cli(
        "build", "model.py:predict", "--platform", PLATFORMS, "--lock", "ociforge.lock",
        "--to", to, "--json", *extra, cwd=project, env=env,
    )  # fmt: skip


def _fresh_runner(tmp_path: Path, proxy: CountingProxy) -> dict:
    home = tmp_path / "runner"
    for sub in ("home", "xdg", "cache"):
        (home / sub).mkdir(parents=True)
    return {
        "HOME": str(home / "home"),
        "XDG_CACHE_HOME": str(home / "xdg"),
        "OCIFORGE_CACHE": str(home / "cache"),
        "UV_CACHE_DIR": str(home / "xdg" / "uv"),
        "HTTP_PROXY": proxy.url,
        "HTTPS_PROXY": proxy.url,
        "http_proxy": proxy.url,
        "https_proxy": proxy.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


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
    previous = json.loads(ok(_build(project, registry.ref(f"{repo}:1"))).stdout)
    assert set(previous["sboms"]) == {"linux/amd64", "linux/arm64"}
    (project / "model.py").write_text(MODEL.format(w="3.0"))
    try:
        with CountingProxy() as net, CountingProxy(upstream=registry.host) as reg:
            env = _fresh_runner(tmp_path, net)
            proc = ok(_build(project, f"{reg.host}/{repo}:2", env=env))  # SBOMs on: the default
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
