"""Registry credentials, found where docker, podman and skopeo find them, and ``login``.

Users have already logged in with one of those tools; ociforge must use the same credentials
without asking again, and ``ociforge login`` must write a file those tools read back. Lookup order
(first hit wins), per registry host:

1. credentials given through the API or the CLI (``--creds``),
2. the environment: ``OCIFORGE_REGISTRY_USERNAME`` + ``OCIFORGE_REGISTRY_PASSWORD`` (optionally
   only for the host in ``OCIFORGE_REGISTRY``),
3. ``$REGISTRY_AUTH_FILE`` (podman/skopeo), ``$XDG_RUNTIME_DIR/containers/auth.json`` and
   ``~/.config/containers/auth.json`` (podman's defaults),
4. ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.

In a docker-format file the precedence is docker's: ``credHelpers[host]``, then ``credsStore``,
then ``auths``. Keys in ``auths`` may carry a scheme or a path (``https://index.docker.io/v1/``);
podman's repository-scoped keys (``host/namespace``) are honored, most specific first.

A :class:`Credential` never shows its secret in ``repr`` or ``str``; each remembers where it came
from, so an authentication error can say which file or helper to fix without printing the secret.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InvalidInput, OciforgeError
from ...fsutil import atomic_write
from ...oci.reference import DOCKER_HUB, normalize_registry

HUB_KEY = "https://index.docker.io/v1/"


class CredentialError(OciforgeError):
    """A credential store or helper that cannot be read or written."""


@dataclass(frozen=True)
class Credential:
    """A username and a secret for one registry; ``source`` says where it was found."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)  # OAuth2 refresh token (docker's)
    registry_token: str = field(default="", repr=False)  # a bearer token used as is
    source: str = ""

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, source={self.source!r}, secret=***)"

    __str__ = __repr__

    @property
    def describe(self) -> str:
        """``user 'alice' from ~/.docker/config.json``: for messages (never the secret)."""
        who = f"user {self.username!r}" if self.username else "a token"
        return f"{who} from {self.source or 'the caller'}"

    @classmethod
    def parse(cls, text: str, source: str = "--creds") -> Credential:
        """``USER:PASSWORD`` as skopeo's ``--creds`` takes it."""
        user, sep, pw = text.partition(":")
        if not sep or not user:
            raise InvalidInput(f"{source} must be USERNAME:PASSWORD")
        return cls(user, pw, source=source)


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def docker_config_path() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) / "config.json" if env else _home() / ".docker" / "config.json"


def podman_auth_paths() -> list[Path]:
    out = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        out.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    out.append(_home() / ".config" / "containers" / "auth.json")
    return out


def searched_paths() -> list[Path]:
    """Every file :func:`find` reads, in order (for 'no credentials found' messages)."""
    return [*podman_auth_paths(), docker_config_path()]


def _tilde(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(_home()))
    except ValueError:
        return str(path)


def _load(path: Path) -> dict | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CredentialError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CredentialError(f"{path} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CredentialError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError):  # a number too long, nesting too deep
        raise CredentialError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise CredentialError(f"{path} is not a JSON object")
    return data


def _section(data: dict, name: str, source: str) -> dict:
    """``data[name]`` as a JSON object ({} when absent); anything else is an error."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CredentialError(f"{source}: {name!r} is not a JSON object")
    return value


_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _helper_name(value, source: str) -> str:
    """A credential helper's name (``docker-credential-NAME``), never a path or an option."""
    if not isinstance(value, str) or not _HELPER_NAME.fullmatch(value):
        raise CredentialError(f"{source}: {str(value)[:40]!r} is not a credential helper name")
    return value


def _key_matches(key: str, registry: str, repository: str) -> int:
    """How specifically an ``auths`` key names this registry/repository (0: not at all)."""
    k = key.strip()
    for prefix in ("https://", "http://"):
        if k.startswith(prefix):
            k = k[len(prefix) :]
    k = k.rstrip("/")
    host, _, path = k.partition("/")
    if normalize_registry(host) != registry:
        return 0
    if not path or (registry == DOCKER_HUB and path == "v1"):
        return 1
    if repository == path or repository.startswith(path + "/"):
        return 1 + len(path)
    return 0


def _from_auths(auths: dict, registry: str, repository: str, source: str) -> Credential | None:
    best, best_score = None, 0
    for key, entry in auths.items():
        score = _key_matches(key, registry, repository)
        if score > best_score and isinstance(entry, dict):
            best, best_score = entry, score
    if best is None:
        return None
    fields = {}
    for name in ("username", "password", "auth", "identitytoken", "registrytoken"):
        value = best.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise CredentialError(f"{source}: the {name!r} of {registry} is not a string")
        fields[name] = value
    user, pw = fields["username"], fields["password"]
    if fields["auth"]:
        try:
            user, sep, pw = base64.b64decode(fields["auth"], validate=True).decode().partition(":")
            if not sep:
                raise ValueError("no colon")
        except ValueError:
            raise CredentialError(
                f"{source}: the 'auth' entry for {registry} is not base64 of USER:PASSWORD"
            ) from None
    token, rtoken = fields["identitytoken"], fields["registrytoken"]
    if not (user or pw or token or rtoken):
        return None
    return Credential(user, pw, token, rtoken, source=source)


def helper_server_url(registry: str) -> str:
    return HUB_KEY if registry == DOCKER_HUB else registry


def run_helper(helper: str, action: str, payload: str, source: str) -> str | None:
    """Run ``docker-credential-HELPER ACTION`` with ``payload`` on stdin; None when not found."""
    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        raise CredentialError(
            f"credential helper docker-credential-{helper} (named in {source}) is not on PATH"
        )
    try:
        proc = subprocess.run(
            [exe, action], input=payload.encode(), capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CredentialError(f"credential helper docker-credential-{helper} failed: {e}") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        if "credentials not found" in out.lower() or "not found" in out.lower():
            return None
        # The helper's own message; helpers do not print secrets on failure.
        raise CredentialError(
            f"credential helper docker-credential-{helper} {action} failed "
            f"(exit {proc.returncode}): {out[:200]}"
        )
    return out


def _from_helper(helper: str, registry: str, source: str) -> Credential | None:
    out = run_helper(helper, "get", helper_server_url(registry), source)
    if out is None:
        return None
    try:
        data = json.loads(out)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        user, secret = data.get("Username") or "", data.get("Secret") or ""
        if not isinstance(user, str) or not isinstance(secret, str):
            raise ValueError("not strings")
    except (ValueError, RecursionError):
        raise CredentialError(
            f"credential helper docker-credential-{helper} printed no valid credentials"
        ) from None
    where = f"credential helper docker-credential-{helper} ({source})"
    if user == "<token>":
        return Credential("", "", secret, source=where)
    return Credential(user, secret, source=where)


def _from_file(path: Path, registry: str, repository: str) -> Credential | None:
    data = _load(path)
    if data is None:
        return None
    source = _tilde(path)
    helpers = _section(data, "credHelpers", source)
    for key, helper in helpers.items():
        if _key_matches(key, registry, ""):
            helper = _helper_name(helper, f"{source} credHelpers")
            return _from_helper(helper, registry, f"{source} credHelpers")
    if data.get("credsStore"):
        store_name = _helper_name(data["credsStore"], f"{source} credsStore")
        cred = _from_helper(store_name, registry, f"{source} credsStore")
        if cred is not None:
            return cred
    return _from_auths(_section(data, "auths", source), registry, repository, f"{source} auths")


def from_env(registry: str) -> Credential | None:
    user = os.environ.get("OCIFORGE_REGISTRY_USERNAME", "")
    pw = os.environ.get("OCIFORGE_REGISTRY_PASSWORD", "")
    only = os.environ.get("OCIFORGE_REGISTRY", "")
    if not (user and pw) or (only and normalize_registry(only) != registry):
        return None
    return Credential(user, pw, source="OCIFORGE_REGISTRY_USERNAME/PASSWORD in the environment")


def find(registry: str, repository: str = "") -> Credential | None:
    """Credentials for ``registry`` (and ``repository``, for scoped keys), or None: anonymous."""
    registry = normalize_registry(registry)
    cred = from_env(registry)
    if cred is not None:
        return cred
    for path in searched_paths():
        cred = _from_file(path, registry, repository)
        if cred is not None:
            return cred
    return None


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write 0600 by rename, so a crash never leaves a half-written credentials file."""
    atomic_write(path, json.dumps(data, indent="\t") + "\n", 0o600, mkdir=True)


def store(registry: str, cred: Credential, path: Path | None = None) -> str:
    """Save ``cred`` the way ``docker login`` does; return where it went (for the message).

    A configured ``credHelpers``/``credsStore`` helper gets it; otherwise ``auths`` in the file.
    """
    registry = normalize_registry(registry)
    path = Path(path) if path else docker_config_path()
    data = _load(path) or {}
    source = _tilde(path)
    helper = None
    for key, h in _section(data, "credHelpers", source).items():
        if _key_matches(key, registry, ""):
            helper = _helper_name(h, f"{source} credHelpers")
    if helper is None and data.get("credsStore"):
        helper = _helper_name(data["credsStore"], f"{source} credsStore")
    key = helper_server_url(registry)
    if helper:
        user = cred.username if not cred.identity_token else "<token>"
        secret = cred.identity_token or cred.password
        payload = json.dumps({"ServerURL": key, "Username": user, "Secret": secret})
        run_helper(helper, "store", payload, _tilde(path))
        # docker keeps an empty entry so 'docker info' lists the registry.
        data["auths"] = _section(data, "auths", source)
        data["auths"][key] = {}
        _write_json_atomic(path, data)
        return f"credential helper docker-credential-{helper}"
    entry: dict = {"auth": base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()}
    if cred.identity_token:
        entry = {
            "auth": base64.b64encode(f"{cred.username}:".encode()).decode(),
            "identitytoken": cred.identity_token,
        }
    auths = data["auths"] = _section(data, "auths", source)
    for k in [k for k in auths if _key_matches(k, registry, "") == 1 and k != key]:
        del auths[k]
    auths[key] = entry
    _write_json_atomic(path, data)
    return _tilde(path)


def erase(registry: str, path: Path | None = None) -> bool:
    """Remove saved credentials for ``registry`` from the docker config; True if any were."""
    registry = normalize_registry(registry)
    path = Path(path) if path else docker_config_path()
    data = _load(path)
    if not data:
        return False
    source = _tilde(path)
    auths = _section(data, "auths", source)
    keys = [k for k in auths if _key_matches(k, registry, "") == 1]
    for k in keys:
        del auths[k]
    helper = None
    if data.get("credsStore"):
        helper = _helper_name(data["credsStore"], f"{source} credsStore")
    for key, h in _section(data, "credHelpers", source).items():
        if _key_matches(key, registry, ""):
            helper = _helper_name(h, f"{source} credHelpers")
    if helper:
        run_helper(helper, "erase", helper_server_url(registry), _tilde(path))
    _write_json_atomic(path, data)
    return bool(keys) or bool(helper)
