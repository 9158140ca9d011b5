"""A real registry for tests: the reference ``docker-registry`` (2.8) on a free loopback port.

Tests of pushing and pulling must run against a registry that behaves like production ones, not
a mock: this starts ``/usr/bin/docker-registry serve CONFIG`` with a config written here, waits
until ``/v2/`` answers, and stops it (and removes nothing the test did not create) on exit.

Import it from any test (the repository root must be on ``sys.path``; ``tests/registry/conftest.py``
shows how)::

    from tests.support.registry import RegistryServer

    def test_something(tmp_path):
        with RegistryServer(tmp_path, mode="http") as reg:
            ref = reg.ref("models/demo:1")        # "127.0.0.1:PORT/models/demo:1"
            ...                                    # reg.host, reg.url, reg.v2("models/demo")

Modes:

``"http"``
    Plain HTTP, no authentication. ``reg.url`` is ``http://127.0.0.1:PORT``.
``"tls"``
    HTTPS with a certificate from a test CA (``reg.ca_file``, a PEM bundle to trust), and
    htpasswd basic auth for ``reg.username`` / ``reg.password`` (default ``alice``/``s3cret-pw``;
    more users via ``users={"bob": "pw"}``).
``"token"``
    Plain HTTP (or HTTPS with ``tls=True``) with ``auth: token``: a :class:`TokenServer` on
    another loopback port issues JWTs (ES256, ``x5c`` header) that the registry verifies against
    the test certificate it was configured with. ``reg.token_server.requests`` records every token
    request (method, scopes, user) so tests can assert on scopes and caching;
    ``reg.token_server.expires_in`` sets token lifetime; ``anonymous_pull=True`` lets anonymous
    clients pull.

Other keyword arguments: ``storage`` (a directory to keep blobs in; default under the given
directory, so two servers can share one), ``extra_config`` (a dict merged into the YAML, e.g.
``{"http": {"headers": ...}}`` is not merged deeply: give whole top-level sections).

``reg.blob_digests(repo)`` lists blobs the registry holds for a repository (by reading its storage)
and ``reg.verify_blobs()`` re-hashes every stored blob, which fault tests use to prove nothing
corrupt was kept. ``make_ca(dir)`` and ``sign_jwt(...)`` are usable on their own.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# Certificates


@dataclass
class TestCA:
    """A throwaway CA: ``ca_file`` to trust, ``issue(hosts)`` for server certificates."""

    dir: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.pem")

    def issue(self, name: str, hosts=("127.0.0.1", "localhost", "::1")) -> tuple[str, str]:
        """Write ``name.pem`` and ``name-key.pem`` for ``hosts``; return their paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_key_pem(key))
        return str(cert_path), str(key_path)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(directory: str | os.PathLike, name: str = "ociforge test CA") -> TestCA:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "ca-key.pem").write_bytes(_key_pem(key))
    return TestCA(d, key, cert)


# ------------------------------------------------------------------------------------------
# Token server


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> str:
    """An ES256 JWT with the signing certificate in ``x5c`` (what registry 2.8 verifies)."""
    header = {
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@dataclass
class TokenRequest:
    method: str
    user: str  # "" when anonymous
    scopes: list[str]
    grant_type: str = ""


@dataclass
class TokenServer:
    """A tiny docker-style token service on loopback (``GET /token`` and OAuth2 ``POST /token``).

    Passwords come from ``users``; a ``POST`` with ``grant_type=refresh_token`` accepts the
    refresh tokens it handed out (``offline_token=true`` or any POST with a password).
    Granted actions: everything asked for, for a known user; ``pull`` for anonymous clients
    when ``anonymous_pull``; ``deny`` maps a user to repositories they get nothing on.
    """

    users: dict[str, str]
    service: str = "ociforge-test-registry"
    issuer: str = "ociforge-test-issuer"
    expires_in: int = 300
    anonymous_pull: bool = False
    deny: dict[str, set[str]] = field(default_factory=dict)
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0

    def start(self, directory: Path) -> TokenServer:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ociforge test token signer")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-signer.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._refresh: dict[str, str] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_GET(self):
                q = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(q.query)
                user = self._basic_user()
                if user is None:
                    return self._deny()
                server.requests.append(TokenRequest("GET", user, params.get("scope", [])))
                offline = params.get("offline_token", ["false"])[0] == "true"
                self._issue(user, params.get("scope", []), refresh=offline and bool(user))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                scopes = " ".join(form.get("scope", [])).split()
                if grant == "password":
                    user = form.get("username", [""])[0]
                    if server.users.get(user) != form.get("password", [None])[0]:
                        return self._deny()
                elif grant == "refresh_token":
                    user = server._refresh.get(form.get("refresh_token", [""])[0])
                    if user is None:
                        return self._deny()
                else:
                    return self._deny(400)
                server.requests.append(TokenRequest("POST", user, scopes, grant))
                self._issue(user, scopes, refresh=True)

            def _basic_user(self) -> str | None:
                header = self.headers.get("Authorization", "")
                if not header:
                    return ""
                if not header.startswith("Basic "):
                    return None
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
                return user if server.users.get(user) == pw else None

            def _deny(self, status: int = 401):
                body = b'{"details":"incorrect username or password"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _issue(self, user: str, scopes: list[str], refresh: bool):
                access = server.grant(user, scopes)
                now = int(time.time())
                claims = {
                    "iss": server.issuer,
                    "sub": user,
                    "aud": server.service,
                    "exp": now + server.expires_in,
                    "nbf": now - 10,
                    "iat": now,
                    "jti": base64.b16encode(os.urandom(8)).decode(),
                    "access": access,
                }
                token = sign_jwt(claims, server.key, server.cert)
                out = {
                    "token": token,
                    "access_token": token,
                    "expires_in": server.expires_in,
                    "issued_at": dt.datetime.now(dt.UTC).isoformat(),
                }
                if refresh and user:
                    rt = base64.b16encode(os.urandom(16)).decode()
                    server._refresh[rt] = user
                    out["refresh_token"] = rt
                body = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def grant(self, user: str, scopes: list[str]) -> list[dict]:
        out = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
            if user and name in self.deny.get(user, set()):
                continue
            if not user:
                actions = [a for a in actions if a == "pull" and self.anonymous_pull]
            if actions:
                out.append({"type": "repository", "name": name, "actions": actions})
        return out

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._httpd.shutdown()
            self._httpd.server_close()


# ------------------------------------------------------------------------------------------
# The registry


class RegistryServer:
    """``docker-registry serve`` on 127.0.0.1 in one of three modes (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        mode: str = "http",
        *,
        users: dict[str, str] | None = None,
        tls: bool | None = None,
        anonymous_pull: bool = False,
        storage: str | os.PathLike | None = None,
        extra_config: dict | None = None,
    ) -> None:
        if mode not in ("http", "tls", "token"):
            raise ValueError(f"mode must be http, tls or token, not {mode!r}")
        self.dir = Path(directory) / f"registry-{mode}-{os.urandom(3).hex()}"
        self.dir.mkdir(parents=True)
        self.mode = mode
        self.tls = (mode == "tls") if tls is None else tls
        self.username, self.password = "alice", "s3cret-pw"
        self.users = {self.username: self.password, **(users or {})}
        self.anonymous_pull = anonymous_pull
        self.storage = Path(storage) if storage else self.dir / "data"
        self.extra_config = extra_config or {}
        self.port = 0
        self.ca: TestCA | None = None
        self.token_server: TokenServer | None = None
        self._proc: subprocess.Popen | None = None

    # -- addresses
    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def ca_file(self) -> str | None:
        return self.ca.ca_file if self.ca else None

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def v2(self, path: str = "") -> str:
        return f"{self.url}/v2/{path}"

    # -- lifecycle
    def start(self) -> RegistryServer:
        self.port = free_port()
        config: dict = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "ociforge-test-secret"},
        }
        if self.tls:
            self.ca = make_ca(self.dir / "ca")
            cert, key = self.ca.issue("registry")
            config["http"]["tls"] = {"certificate": cert, "key": key}
        if self.mode == "tls":
            htpasswd = self.dir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in self.users.items()))
            config["auth"] = {"htpasswd": {"realm": "ociforge-test", "path": str(htpasswd)}}
        elif self.mode == "token":
            self.token_server = TokenServer(dict(self.users), anonymous_pull=self.anonymous_pull)
            self.token_server.start(self.dir)
            config["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self.token_server.bundle),
                }
            }
        config.update(self.extra_config)
        cfg_path = self.dir / "config.yml"
        # JSON is YAML: no YAML library needed.
        cfg_path.write_text(json.dumps(config, indent=1))
        self._log = open(self.dir / "registry.log", "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(cfg_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 20.0) -> None:
        ctx = ssl.create_default_context(cafile=self.ca_file) if self.tls else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.v2(), timeout=2, context=ctx)
                return
            except urllib.error.HTTPError:
                return  # 401 means it is up
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(
            f"docker-registry did not answer on {self.url}: {self.log_text()[-2000:]}"
        )

    def log_text(self) -> str:
        try:
            return (self.dir / "registry.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None:
            self._log.close()
        if self.token_server:
            self.token_server.stop()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inspecting storage (what the registry really kept)
    def _blob_root(self) -> Path:
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"

    def blob_digests(self, repository: str | None = None) -> set[str]:
        """Digests of blobs in storage; for one repository, those linked into it."""
        if repository is None:
            root = self._blob_root()
            return {"sha256:" + p.parent.name for p in root.glob("*/*/data")}
        layers = self.storage / "docker/registry/v2/repositories" / repository / "_layers/sha256"
        return {"sha256:" + p.name for p in layers.glob("*") if (p / "link").exists()}

    def verify_blobs(self) -> int:
        """Re-hash every stored blob; raise AssertionError on one that does not match its name."""
        n = 0
        for data in self._blob_root().glob("*/*/data"):
            h = hashlib.sha256()
            with open(data, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
            assert h.hexdigest() == data.parent.name, f"corrupt blob kept by registry: {data}"
            n += 1
        return n

    def tags(self, repository: str) -> list[str]:
        tags = self.storage / "docker/registry/v2/repositories" / repository / "_manifests/tags"
        return sorted(p.name for p in tags.glob("*")) if tags.exists() else []


def _bcrypt(password: str) -> str:
    """An htpasswd bcrypt hash (cost 4: fast tests; the registry accepts any cost)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the C library's bcrypt; Python 3.11-3.12 (3.13 removed the module)

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
