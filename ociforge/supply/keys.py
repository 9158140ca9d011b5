"""cosign's key pair format: ECDSA P-256, the private key encrypted under a password.

``cosign.pub`` is a PEM ``PUBLIC KEY`` (PKIX). ``cosign.key`` is a PEM block
``ENCRYPTED SIGSTORE PRIVATE KEY`` (cosign 2.x; older cosign wrote ``ENCRYPTED COSIGN PRIVATE
KEY``, read too) whose body is JSON, as secure-systems-lab's ``encrypted`` package writes it::

    {"kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": B64(32 bytes)},
     "cipher": {"name": "nacl/secretbox", "nonce": B64(24 bytes)},
     "ciphertext": B64(secretbox(PKCS#8 DER of the private key))}

The secretbox key is scrypt(password, salt) with those parameters, 32 bytes. The password comes
from ``$COSIGN_PASSWORD`` (as cosign reads it), else a prompt on a terminal. No message ever
carries the password or key material.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import sys
from pathlib import Path

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import InvalidInput, SignatureError
from ..fsutil import atomic_write

PRIVATE_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
LEGACY_PRIVATE_PEM = "ENCRYPTED COSIGN PRIVATE KEY"
SCRYPT = {"N": 65536, "r": 8, "p": 1}
PASSWORD_ENV = "COSIGN_PASSWORD"


def _nacl():
    return nacl.secret, nacl.exceptions


def password_from_env_or_prompt(*, confirm: bool = False, what: str = "the private key") -> bytes:
    """``$COSIGN_PASSWORD`` (an empty value is an empty password), else a prompt on a terminal."""
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV].encode()
    if not sys.stdin.isatty():
        raise SignatureError(
            f"a password for {what} is needed: set {PASSWORD_ENV} (no terminal to ask on)"
        )
    first = getpass.getpass(f"Enter password for {what}: ")
    if confirm and getpass.getpass("Enter password again: ") != first:
        raise SignatureError("the two passwords differ")
    return first.encode()


def _kdf(password: bytes, salt: bytes, params: dict) -> bytes:
    n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
    if n > 1 << 20 or r > 32 or p > 16:  # a file may not make us spend gigabytes
        raise InvalidInput(f"scrypt parameters N={n} r={r} p={p} are out of the usual range")
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 << 20, dklen=32)


def _pem(label: str, body: bytes) -> bytes:
    b64 = base64.b64encode(body).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n"
    ).encode()


def _unpem(data: bytes, where: str) -> tuple[str, bytes]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise SignatureError(f"{where} is not a PEM key file (not text)") from None
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or not lines[0].endswith("-----"):
        raise SignatureError(f"{where} is not a PEM key file (no -----BEGIN ...----- line)")
    label = lines[0][len("-----BEGIN ") : -len("-----")]
    try:
        end = lines.index(f"-----END {label}-----")
        return label, base64.b64decode("".join(lines[1:end]), validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError(f"{where}: damaged PEM block {label!r}") from None


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """The PEM bytes of ``cosign.key``."""
    secret, _ = _nacl()
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = os.urandom(32)
    box = secret.SecretBox(_kdf(password, salt, SCRYPT))
    nonce = os.urandom(secret.SecretBox.NONCE_SIZE)
    ciphertext = box.encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {"name": "scrypt", "params": dict(SCRYPT), "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    return _pem(PRIVATE_PEM, json.dumps(doc, separators=(",", ":")).encode())


def decrypt_private_key(
    data: bytes, password: bytes, where: str = "the key"
) -> ec.EllipticCurvePrivateKey:
    """The private key of a ``cosign.key`` file's bytes; a plain PKCS#8 / EC PEM is read too."""
    label, body = _unpem(data, where)
    if label in ("PRIVATE KEY", "EC PRIVATE KEY"):
        try:
            key = serialization.load_pem_private_key(data, None)
        except (ValueError, TypeError):
            raise SignatureError(f"{where}: not a readable {label}") from None
        return _check_curve(key, where)
    if label not in (PRIVATE_PEM, LEGACY_PRIVATE_PEM):
        raise SignatureError(
            f"{where} holds a {label!r} PEM block, not a cosign private key ({PRIVATE_PEM})"
        )
    secret, nacl_errors = _nacl()
    try:
        doc = json.loads(body)
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
            raise SignatureError(
                f"{where}: unsupported encryption ({kdf.get('name')}, {cipher.get('name')}); "
                "cosign keys use scrypt and nacl/secretbox"
            )
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(doc["ciphertext"])
        box_key = _kdf(password, salt, kdf["params"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise SignatureError(
            f"{where}: damaged {label} (its JSON fields are not as cosign writes them)"
        ) from None
    try:
        der = secret.SecretBox(box_key).decrypt(ciphertext, nonce)
    except (nacl_errors.CryptoError, ValueError):
        raise SignatureError(f"{where}: wrong password (or a damaged key file)") from None
    try:
        key = serialization.load_der_private_key(der, None)
    except (ValueError, TypeError):
        raise SignatureError(f"{where}: the decrypted key is not a PKCS#8 private key") from None
    return _check_curve(key, where)


def _check_curve(key, where: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError(f"{where}: only ECDSA P-256 keys are supported")
    return key


def public_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes, where: str = "the public key") -> ec.EllipticCurvePublicKey:
    """A PEM ``PUBLIC KEY`` (``cosign.pub``), ECDSA P-256."""
    label, _body = _unpem(data, where)
    if label != "PUBLIC KEY":
        hint = " (that is the private key: verify with the .pub file)" if "PRIVATE" in label else ""
        raise SignatureError(f"{where} holds a {label!r} PEM block, not a PUBLIC KEY{hint}")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SignatureError(f"{where}: not a readable public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError(f"{where}: only ECDSA P-256 public keys are supported")
    return key


def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{what} {path}: no such file") from None
    except OSError as e:
        raise InvalidInput(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_private_key(
    path: str | os.PathLike, password: bytes | str | None = None
) -> ec.EllipticCurvePrivateKey:
    """The key in the file at ``path``; ``password`` None: ``$COSIGN_PASSWORD`` or a prompt."""
    data = _read(path, "private key")
    label, _ = _unpem(data, str(path))
    if label in (PRIVATE_PEM, LEGACY_PRIVATE_PEM) and password is None:
        password = password_from_env_or_prompt(what=str(path))
    if isinstance(password, str):
        password = password.encode()
    return decrypt_private_key(data, password or b"", str(path))


def read_public_key(path: str | os.PathLike) -> ec.EllipticCurvePublicKey:
    return load_public_key(_read(path, "public key"), str(path))


def generate_key_pair(
    prefix: str | os.PathLike = "cosign",
    password: bytes | str | None = None,
    *,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (encrypted) and ``PREFIX.pub``, as ``cosign generate-key-pair`` does."""
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (key_path, pub_path):
        if p.exists() and not force:
            raise InvalidInput(f"{p} exists: remove it first, or pass --force to replace it")
    if password is None:
        password = password_from_env_or_prompt(confirm=True, what=str(key_path))
    if isinstance(password, str):
        password = password.encode()
    key = ec.generate_private_key(ec.SECP256R1())
    atomic_write(key_path, encrypt_private_key(key, password), 0o600, mkdir=True)
    atomic_write(pub_path, public_pem(key), mkdir=True)
    return key_path, pub_path


def sign_bytes(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    """Base64 of the ASN.1 DER ECDSA signature over SHA-256 of ``payload`` (what cosign stores)."""
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def verify_bytes(key: ec.EllipticCurvePublicKey, payload: bytes, signature_b64: str) -> bool:
    try:
        sig = base64.b64decode(signature_b64, validate=True)
        key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, binascii.Error, ValueError):
        return False
