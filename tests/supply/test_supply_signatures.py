"""cosign-format signatures: what ociforge signs, the real cosign verifies, and the other way
round; keys interoperate both ways (encrypted private keys included); a moved tag, a missing
signature, another key, a bad key file and a wrong password are refused with clear errors."""

from __future__ import annotations

import json
import urllib.request

import pytest

from ociforge.errors import SignatureError
from ociforge.oci.blobstore import BlobStore
from ociforge.supply import cosign as cosign_mod
from ociforge.supply import keys
from ociforge.supply.attach import open_image, verify_image
from ociforge.supply.place import Place
from ociforge.transports.layout import list_tags, write_layout
from ociforge.transports.registry.remote import push
from tests.registry.conftest import build_image
from tests.supply.conftest import PASSWORD, cosign_verify

ENV = {"COSIGN_PASSWORD": PASSWORD}


@pytest.fixture
def our_keys(tmp_path, cli):
    proc = cli("key", "generate", "--output-key-prefix", tmp_path / "ours", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    key, pub = tmp_path / "ours.key", tmp_path / "ours.pub"
    assert key.read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    assert key.stat().st_mode & 0o777 == 0o600
    return key, pub


@pytest.fixture
def cosign_keys(tmp_path, cosign):
    d = tmp_path / "cosign-made"
    d.mkdir()
    proc = cosign("generate-key-pair", cwd=d)
    assert proc.returncode == 0, proc.stderr
    return d / "cosign.key", d / "cosign.pub"


def _push(registry, tmp_path, repo_tag: str):
    img = build_image(BlobStore(tmp_path / "store"))
    ref = registry.ref(repo_tag)
    return push(img, ref), ref


def test_cosign_verifies_what_ociforge_signs(registry, tmp_path, cli, cosign, our_keys):
    key, pub = our_keys
    pushed, ref = _push(registry, tmp_path, "sig/signed:1")
    proc = cli("sign", "--key", key, ref, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert cosign_mod.signature_tag(pushed.digest) in proc.stdout
    ok = cosign_verify(cosign, pub, ref)
    assert ok.returncode == 0, ok.stderr
    payload = json.loads(next(ln for ln in ok.stdout.splitlines() if ln.startswith("[")))[0]
    assert payload["critical"]["image"]["docker-manifest-digest"] == pushed.digest
    # and ociforge's own verify agrees
    mine = cli("verify", "--key", pub, ref)
    assert mine.returncode == 0, mine.stderr
    assert f"@{pushed.digest}" in mine.stdout


def test_cosign_refuses_an_unsigned_image(registry, tmp_path, cli, cosign, our_keys):
    _key, pub = our_keys
    pushed, ref = _push(registry, tmp_path, "sig/unsigned:1")
    refused = cosign_verify(cosign, pub, ref)
    assert refused.returncode != 0
    assert "no signatures found" in refused.stderr
    mine = cli("verify", "--key", pub, ref)
    assert mine.returncode == 2
    assert "is not signed" in mine.stderr and pushed.digest in mine.stderr
    assert "Traceback" not in mine.stderr


def test_a_tag_moved_after_signing_is_refused(registry, tmp_path, cli, cosign, our_keys):
    key, pub = our_keys
    first, ref = _push(registry, tmp_path, "sig/moved:1")
    assert cli("sign", "--key", key, ref, env=ENV).returncode == 0
    assert cosign_verify(cosign, pub, ref).returncode == 0
    second = push(build_image(BlobStore(tmp_path / "store2")), ref)  # the tag now names another
    assert second.digest != first.digest
    refused = cosign_verify(cosign, pub, ref)
    assert refused.returncode != 0, refused.stdout
    mine = cli("verify", "--key", pub, ref)
    assert mine.returncode == 2 and second.digest in mine.stderr
    # the old digest stays verifiable by digest
    old = cosign_verify(cosign, pub, f"{registry.host}/sig/moved@{first.digest}")
    assert old.returncode == 0, old.stderr


def test_a_signature_copied_onto_another_digest_is_refused(registry, tmp_path, our_keys):
    """The payload names the digest it signs: a .sig tag copied to another image does not count."""
    key, pub = our_keys
    a, ref_a = _push(registry, tmp_path, "sig/copy:a")
    b, _ref_b = _push(registry, tmp_path, "sig/copy:b")
    place, _ = Place.of(ref_a)
    cosign_mod.sign(place, a.digest, keys.read_private_key(key, PASSWORD))
    sig = place.read(cosign_mod.signature_tag(a.digest))
    place.write(sig, cosign_mod.signature_tag(b.digest))
    with pytest.raises(SignatureError, match="not of .*tag moved"):
        cosign_mod.verify(place, b.digest, keys.read_public_key(pub))


def test_ociforge_verifies_what_cosign_signs_with_its_own_keys(
    registry, tmp_path, cli, cosign, cosign_keys, our_keys
):
    key, pub = cosign_keys
    pushed, ref = _push(registry, tmp_path, "sig/bycosign:1")
    by_digest = f"{registry.host}/sig/bycosign@{pushed.digest}"
    signed = cosign(
        "sign", "--key", key, "--tlog-upload=false", "--allow-insecure-registry", "-y", by_digest
    )
    assert signed.returncode == 0, signed.stderr
    ok = cli("verify", "--key", pub, ref)
    assert ok.returncode == 0, ok.stderr
    # another key's public half does not verify it
    _our_key, our_pub = our_keys
    wrong = cli("verify", "--key", our_pub, ref)
    assert wrong.returncode == 2 and "another key" in wrong.stderr


def test_cosign_generated_private_key_signs_for_ociforge(
    registry, tmp_path, cli, cosign, cosign_keys
):
    """cosign's encrypted private key works in `ociforge sign`, and cosign accepts the result."""
    key, pub = cosign_keys
    _pushed, ref = _push(registry, tmp_path, "sig/cosignkey:1")
    assert cli("sign", "--key", key, ref, env=ENV).returncode == 0
    ok = cosign_verify(cosign, pub, ref)
    assert ok.returncode == 0, ok.stderr


def test_ociforge_keys_read_by_cosign(cosign, our_keys):
    key, pub = our_keys
    proc = cosign("public-key", "--key", key)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == pub.read_text().strip()


def test_signing_twice_adds_nothing_and_two_keys_add_a_layer(
    registry, tmp_path, cosign_keys, our_keys
):
    pushed, ref = _push(registry, tmp_path, "sig/twice:1")
    place, _ = Place.of(ref)
    ours = keys.read_private_key(our_keys[0], PASSWORD)
    cosign_mod.sign(place, pushed.digest, ours)
    cosign_mod.sign(place, pushed.digest, ours)
    assert len(place.read(cosign_mod.signature_tag(pushed.digest)).layers) == 1
    cosign_mod.sign(place, pushed.digest, keys.read_private_key(cosign_keys[0], PASSWORD))
    assert len(place.read(cosign_mod.signature_tag(pushed.digest)).layers) == 2
    for pub in (our_keys[1], cosign_keys[1]):
        assert cosign_mod.verify(place, pushed.digest, keys.read_public_key(pub))


def test_sign_and_verify_in_an_oci_layout(tmp_path, cli, our_keys):
    key, pub = our_keys
    img = build_image(BlobStore(tmp_path / "store"))
    write_layout(img, tmp_path / "layout", "v1")
    spec = f"oci:{tmp_path / 'layout'}:v1"
    assert cli("sign", "--key", key, spec, env=ENV).returncode == 0
    assert cosign_mod.signature_tag(img.digest) in list_tags(tmp_path / "layout")
    assert cli("verify", "--key", pub, spec).returncode == 0
    place, obj = open_image(spec)
    assert verify_image(place, obj, keys.read_public_key(pub))[0].digest == img.digest


def test_bad_key_files_and_passwords_are_clear_errors(registry, tmp_path, cli, our_keys):
    key, pub = our_keys
    _pushed, ref = _push(registry, tmp_path, "sig/bad:1")
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello, not a key\n")
    proc = cli("sign", "--key", not_a_key, ref, env=ENV)
    assert proc.returncode == 2 and "not a PEM key file" in proc.stderr
    proc = cli("sign", "--key", key, ref, env={"COSIGN_PASSWORD": "wrong password 42"})
    assert proc.returncode == 2 and "wrong password" in proc.stderr
    assert "wrong password 42" not in proc.stdout + proc.stderr
    proc = cli("verify", "--key", key, ref)  # the private key where the public one belongs
    assert proc.returncode == 2 and "not a PUBLIC KEY" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("sign", "--key", tmp_path / "missing.key", ref, env=ENV)
    assert proc.returncode == 2 and "no such file" in proc.stderr
    secret_body = "".join(key.read_text().splitlines()[1:-1])
    proc = cli("verify", "--key", pub, ref)
    assert proc.returncode == 2 and secret_body not in proc.stderr


def test_no_password_and_no_terminal_is_refused(tmp_path, monkeypatch, our_keys):
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(SignatureError, match="COSIGN_PASSWORD"):
        keys.read_private_key(our_keys[0])


def test_signature_manifest_is_what_cosign_writes(registry, tmp_path, our_keys):
    pushed, ref = _push(registry, tmp_path, "sig/layout:1")
    place, _ = Place.of(ref)
    cosign_mod.sign(place, pushed.digest, keys.read_private_key(our_keys[0], PASSWORD))
    tag = cosign_mod.signature_tag(pushed.digest)
    req = urllib.request.Request(
        f"{registry.url}/v2/sig/layout/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(req) as resp:
        manifest = json.load(resp)
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert "dev.cosignproject.cosign/signature" in layer["annotations"]
    with urllib.request.urlopen(f"{registry.url}/v2/sig/layout/blobs/{layer['digest']}") as resp:
        payload = json.load(resp)
    assert payload == {
        "critical": {
            "identity": {"docker-reference": f"{registry.host}/sig/layout"},
            "image": {"docker-manifest-digest": pushed.digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
