"""cosign's key file format, read and written here: round trips, and every bad file refused with
a SignatureError that names the problem and never the password."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ociforge.errors import InvalidInput, SignatureError
from ociforge.supply import keys


def test_round_trip_and_signature(tmp_path):
    key_path, pub_path = keys.generate_key_pair(tmp_path / "k", "pw")
    key = keys.read_private_key(key_path, "pw")
    pub = keys.read_public_key(pub_path)
    sig = keys.sign_bytes(key, b"payload")
    assert keys.verify_bytes(pub, b"payload", sig)
    assert not keys.verify_bytes(pub, b"payload!", sig)
    assert not keys.verify_bytes(pub, b"payload", "not base64 ~~")
    body = json.loads(base64.b64decode("".join(key_path.read_text().splitlines()[1:-1])))
    assert body["kdf"]["name"] == "scrypt" and body["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert body["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(body["kdf"]["salt"])) == 32
    assert len(base64.b64decode(body["cipher"]["nonce"])) == 24


def test_existing_files_are_not_replaced_without_force(tmp_path):
    keys.generate_key_pair(tmp_path / "k", "pw")
    with pytest.raises(InvalidInput, match="exists"):
        keys.generate_key_pair(tmp_path / "k", "pw")
    keys.generate_key_pair(tmp_path / "k", "pw", force=True)


def test_damaged_ciphertext_reads_as_wrong_password_or_damage(tmp_path):
    key_path, _ = keys.generate_key_pair(tmp_path / "k", "pw")
    lines = key_path.read_text().splitlines()
    body = json.loads(base64.b64decode("".join(lines[1:-1])))
    ct = bytearray(base64.b64decode(body["ciphertext"]))
    ct[5] ^= 1
    body["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    data = keys._pem(keys.PRIVATE_PEM, json.dumps(body).encode())
    with pytest.raises(SignatureError, match="wrong password .or a damaged key file") as e:
        keys.decrypt_private_key(data, b"pw", "k.key")
    assert "pw" not in str(e.value).replace("password", "")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe binary", "not text"),
        (b"just words\n", "no -----BEGIN"),
        (b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nbm90IGpzb24=\n"
         b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n", "damaged"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a cosign private key"),
    ],
)  # fmt: skip
def test_files_that_are_not_keys(tmp_path, content, message):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(SignatureError, match=message):
        keys.read_private_key(path, "pw")


def test_other_algorithms_are_refused(tmp_path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SignatureError, match="P-256"):
        keys.load_public_key(pem)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SignatureError, match="P-256"):
        keys.load_public_key(keys.public_pem(p384))
