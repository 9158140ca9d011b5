"""Closed sites: a bundle carries its images' signatures and SBOMs; ``bundle import
--require-signature PUB`` pushes nothing unless every image is signed with that key, and what it
pushes verifies with the real cosign and still has its SBOM on the other side."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from ociforge.oci.blobstore import BlobStore
from ociforge.oci.platform import Platform
from ociforge.supply import attach, keys, sbom
from ociforge.supply.place import Place
from ociforge.transports.registry.remote import push
from tests.registry.conftest import build_image
from tests.supply.conftest import PASSWORD, cosign_verify

ENV = {"COSIGN_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return keys.generate_key_pair(d / "site", PASSWORD)


def _image_with_sbom(registry, tmp_path, repo_tag: str, signing_key=None):
    img = build_image(BlobStore(tmp_path / "store"))
    ref = registry.ref(repo_tag)
    pushed = push(img, ref)
    place, _ = Place.of(ref)
    inp = sbom.SbomInputs(
        name="bundled", version="1", platform=Platform.parse("linux/amd64"),
        image_digest=pushed.digest, epoch=0, base_name="", base_digest="", debs=None,
    )  # fmt: skip
    attach.attach_sbom(place, img.descriptor(platform=False), inp)
    if signing_key is not None:
        attach.sign_image(place, img, keys.read_private_key(signing_key, PASSWORD))
    return pushed, ref


def _tags(registry, repo: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"{registry.url}/v2/{repo}/tags/list") as resp:
            return json.load(resp).get("tags") or []
    except urllib.error.HTTPError as e:
        assert e.code == 404
        return []


def test_signed_bundle_imports_with_signature_and_sbom(registry, tmp_path, cli, cosign, key_pair):
    key, pub = key_pair
    pushed, ref = _image_with_sbom(registry, tmp_path, "site/model:1", key)
    bundle = tmp_path / "b.bundle"
    proc = cli("bundle", "export", ref, "-o", bundle, "--json")
    assert proc.returncode == 0, proc.stderr
    kinds = sorted(a["kind"] for a in json.loads(proc.stdout)["attached"])
    assert kinds == ["referrers", "signature"]
    proc = cli(
        "bundle", "import", bundle, "--to-registry", registry.host, "--prefix", "closed",
        "--require-signature", pub,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    imported = f"{registry.host}/closed/site/model:1"
    ok = cosign_verify(cosign, pub, imported)
    assert ok.returncode == 0, ok.stderr
    found = cli("sbom", imported)
    assert found.returncode == 0, found.stderr
    assert (
        json.loads(found.stdout)["packages"][0]["checksums"][0]["checksumValue"]
        == (pushed.digest.split(":")[1])
    )


def test_unsigned_bundle_is_refused_with_nothing_pushed(registry, tmp_path, cli, key_pair):
    _key, pub = key_pair
    _pushed, ref = _image_with_sbom(registry, tmp_path, "site/unsigned:1")
    bundle = tmp_path / "u.bundle"
    assert cli("bundle", "export", ref, "-o", bundle).returncode == 0
    proc = cli(
        "bundle", "import", bundle, "--to-registry", registry.host, "--prefix", "refused",
        "--require-signature", pub,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "is not signed" in proc.stderr and "nothing was pushed" in proc.stderr
    assert _tags(registry, "refused/site/unsigned") == []


def test_bundle_signed_by_another_key_is_refused(registry, tmp_path, cli, key_pair):
    _key, pub = key_pair
    other_key, _other_pub = keys.generate_key_pair(tmp_path / "other", PASSWORD)
    _pushed, ref = _image_with_sbom(registry, tmp_path, "site/other:1", other_key)
    bundle = tmp_path / "o.bundle"
    assert cli("bundle", "export", ref, "-o", bundle).returncode == 0
    proc = cli(
        "bundle", "import", bundle, "--to-registry", registry.host, "--prefix", "wrongkey",
        "--require-signature", pub,
    )  # fmt: skip
    assert proc.returncode == 2 and "another key" in proc.stderr
    assert _tags(registry, "wrongkey/site/other") == []


def test_a_bundle_of_two_with_one_unsigned_pushes_neither(registry, tmp_path, cli, key_pair):
    key, pub = key_pair
    _a, ref_a = _image_with_sbom(registry, tmp_path, "site/pair-a:1", key)
    _b, ref_b = _image_with_sbom(registry, tmp_path, "site/pair-b:1")
    bundle = tmp_path / "p.bundle"
    assert cli("bundle", "export", ref_a, ref_b, "-o", bundle).returncode == 0
    proc = cli(
        "bundle", "import", bundle, "--to-registry", registry.host, "--prefix", "pair",
        "--require-signature", pub,
    )  # fmt: skip
    assert proc.returncode == 2
    assert _tags(registry, "pair/site/pair-a") == [] and _tags(registry, "pair/site/pair-b") == []
