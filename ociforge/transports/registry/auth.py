"""Registry authentication: ``WWW-Authenticate`` challenges, basic auth, bearer tokens.

Every registry answers an unauthenticated request with 401 and a challenge; what follows differs
(Docker Hub and GHCR hand out bearer tokens per scope from a separate realm, Harbor or an
htpasswd-protected mirror want basic auth). The :class:`Authenticator` learns the challenge once
per registry and then sends the right ``Authorization`` up front, caching tokens per set of
scopes until shortly before they expire, so a push of 50 blobs does not fetch 50 tokens.

Secrets are only ever put in ``Authorization`` headers; messages name the registry, the user and
where the credential came from (:attr:`Credential.describe`), never a password or a token.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import requests

from ...errors import OciforgeError
from . import credentials as creds

TOKEN_LEEWAY_S = 10
DEFAULT_TOKEN_LIFETIME_S = 60
CLIENT_ID = "ociforge"
MAX_TOKEN_ANSWER = 1 << 20  # a token answer is a few KiB; more is not a token service
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class AuthError(OciforgeError):
    """Credentials missing or refused, or not enough rights for the operation."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


_PARAM = re.compile(r'\s*([a-zA-Z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``Bearer realm="...",service="...",scope="..."`` (several schemes allowed)."""
    out: list[Challenge] = []
    rest = (header or "").strip()
    while rest:
        m = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if not m:
            break
        scheme = m.group(1).lower()
        rest = rest[m.end() :]
        params: dict[str, str] = {}
        while True:
            pm = _PARAM.match(rest)
            if not pm or not pm.group(0).strip():
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
            rest = rest[pm.end() :]
        out.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return out


def repository_scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def merge_scopes(scopes) -> tuple[str, ...]:
    """One entry per resource, actions merged (``pull`` + ``push`` → ``pull,push``), sorted."""
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        for s in str(scope).split():
            kind_name, _, actions = s.rpartition(":")
            if not kind_name:
                continue
            merged.setdefault(kind_name, set()).update(a for a in actions.split(",") if a)
    return tuple(f"{k}:{','.join(sorted(v))}" for k, v in sorted(merged.items()))


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in: where credentials may go."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def where(url: str) -> str:
    """``scheme://host[:port]`` of a URL, for messages (path and query can carry tokens)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{port}" if port is not None else "")


class AnswerTooLarge(OciforgeError):
    """A server sent more than a bounded read allows (an endless or hostile answer)."""


def read_capped(resp: requests.Response, limit: int, what: str) -> bytes:
    """At most ``limit`` bytes of a streamed response's body (decoded); more is an error naming
    the URL's origin (never its query, which can carry a token). The response is closed then."""
    if resp.request is not None and resp.request.method == "HEAD":
        return b""  # no body: its Content-Length is the resource's size (a blob's: GiBs)
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit and not resp.headers.get("Content-Encoding"):
        resp.close()
        raise AnswerTooLarge(
            f"{where(resp.url)}: the answer to {what} is {int(declared)} bytes, over the "
            f"{limit}-byte limit; not read"
        )
    out = bytearray()
    try:
        for block in resp.iter_content(64 << 10):
            out += block
            if len(out) > limit:
                resp.close()
                raise AnswerTooLarge(
                    f"{where(resp.url)}: the answer to {what} is over the {limit}-byte limit; "
                    "stopped reading"
                )
    except requests.RequestException as e:
        resp.close()
        raise OciforgeError(
            f"{where(resp.url)}: reading the answer to {what}: {_short(e)}"
        ) from None
    return bytes(out)


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """Produces the ``Authorization`` header for a registry; thread-safe.

    ``session`` and ``verify`` are the HTTP settings of the registry client (a token realm gets
    the same TLS verification); ``insecure`` allows sending credentials to a plain-HTTP realm
    that is not on loopback.
    """

    def __init__(
        self,
        registry: str,
        credential: creds.Credential | None,
        session: requests.Session,
        *,
        verify: bool | str = True,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        self.credential = credential
        self.session = session
        self.verify = verify
        self.insecure = insecure
        self.timeout = timeout
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple, _Token] = {}
        self._lock = threading.Lock()
        self.token_requests = 0  # how many tokens were fetched (tests and logs)

    # -- learning the challenge
    def learn(self, response: requests.Response) -> Challenge | None:
        """Remember the challenge of a 401 response; returns it (None when there is none)."""
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        pick = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if pick is not None:
            self.challenge = pick
        return pick

    def header(self, scopes, *, force: bool = False) -> str | None:
        """The ``Authorization`` value for ``scopes``, or None when anonymous works so far."""
        ch = self.challenge
        cred = self.credential
        if ch is None:
            return None
        if ch.scheme == "basic":
            if cred is None or not (cred.username or cred.password):
                raise self._missing()
            raw = f"{cred.username}:{cred.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if ch.scheme != "bearer":
            raise AuthError(f"{self.registry} asks for unsupported authentication {ch.scheme!r}")
        if cred is not None and cred.registry_token:
            return "Bearer " + cred.registry_token
        scopes = merge_scopes([*scopes, *(ch.params.get("scope", "").split())])
        key = (ch.realm, ch.params.get("service", ""), scopes, bool(cred))
        with self._lock:
            tok = self._tokens.get(key)
            if tok is None or force or tok.expires <= time.time():
                tok = self._fetch_token(ch, scopes)
                self._tokens[key] = tok
        return "Bearer " + tok.value if tok.value else None

    def _missing(self) -> AuthError:
        looked = ", ".join(creds._tilde(p) for p in creds.searched_paths())
        return AuthError(
            f"{self.registry} requires authentication and no credentials were found for it "
            f"(looked in OCIFORGE_REGISTRY_USERNAME/PASSWORD, {looked}); "
            f"run 'ociforge login {self.registry}' or pass --creds"
        )

    def refused(self, what: str = "") -> AuthError:
        """The error for credentials a registry or realm would not accept."""
        if self.credential is None:
            return (
                self._missing()
                if not what
                else AuthError(
                    f"{self.registry}: anonymous access is not allowed to {what}; log in first "
                    f"('ociforge login {self.registry}')"
                )
            )
        target = f" to {what}" if what else ""
        return AuthError(
            f"{self.registry} refused the credentials{target}: {self.credential.describe}"
        )

    def _fetch_token(self, ch: Challenge, scopes: tuple[str, ...]) -> _Token:
        realm = ch.realm
        if not realm:
            raise AuthError(f"{self.registry} sent a bearer challenge without a realm")
        parts = urllib.parse.urlsplit(realm)
        cred = self.credential
        has_secret = cred is not None and bool(cred.password or cred.identity_token)
        loopback = (parts.hostname or "") in ("localhost", "127.0.0.1", "::1")
        if parts.scheme != "https" and has_secret and not (loopback or self.insecure):
            raise AuthError(
                f"{self.registry}: token realm {parts.scheme}://{parts.netloc} is not HTTPS; "
                "refusing to send credentials there (use --insecure only if you trust the network)"
            )
        service = ch.params.get("service", "")
        self.token_requests += 1
        try:
            if cred is not None and cred.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": cred.identity_token,
                    "client_id": CLIENT_ID,
                    "service": service,
                    "scope": " ".join(scopes),
                }
                resp = self._token_request("POST", realm, data=form)
            else:
                params = [("service", service)] if service else []
                params += [("scope", s) for s in scopes]
                basic = (cred.username, cred.password) if has_secret else None
                resp = self._token_request("GET", realm, params=params, auth=basic)
        except requests.exceptions.SSLError as e:
            raise AuthError(
                f"{self.registry}: TLS verification of token realm {parts.netloc} failed ({_short(e)})"
            ) from None
        except requests.RequestException as e:
            raise AuthError(
                f"{self.registry}: cannot reach token realm {parts.netloc} ({_short(e)})"
            ) from None
        status = resp.status_code
        if status != 200:
            resp.close()
            if status in (401, 403):
                raise self.refused()
            raise AuthError(f"{self.registry}: token realm {parts.netloc} answered HTTP {status}")
        try:
            body = read_capped(resp, MAX_TOKEN_ANSWER, "a token request")
        except OciforgeError as e:
            raise AuthError(f"{self.registry}: {e}") from None
        finally:
            resp.close()
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            value = data.get("token") or data.get("access_token") or ""
            lifetime = int(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME_S)
            if not isinstance(value, str):
                raise ValueError("token is not a string")
        except (ValueError, TypeError, OverflowError):
            raise AuthError(
                f"{self.registry}: token realm {parts.netloc} sent no valid token answer"
            ) from None
        if data.get("refresh_token") and cred is not None and not cred.identity_token:
            # Keep using the refresh token rather than sending the password again.
            self.credential = creds.Credential(
                cred.username, cred.password, data["refresh_token"], source=cred.source
            )
        return _Token(value, time.time() + max(lifetime - TOKEN_LEEWAY_S, lifetime / 2))

    def _token_request(self, method: str, url: str, **kw) -> requests.Response:
        """A token request, following redirects by hand and only within the realm's origin: a
        redirect elsewhere (a 307 would resend the form, refresh token included) is refused."""
        home = origin_of(url)
        for _hop in range(6):
            resp = self.session.request(
                method,
                url,
                allow_redirects=False,
                stream=True,
                verify=self.verify,
                timeout=self.timeout,
                **kw,
            )
            if resp.status_code not in _REDIRECTS or "Location" not in resp.headers:
                return resp
            new = urllib.parse.urljoin(url, resp.headers["Location"])
            resp.close()
            if origin_of(new) != home:
                raise AuthError(
                    f"{self.registry}: token realm {where(url)} redirected to {where(new)}; "
                    "not followed (a token request goes only to the realm's own origin)"
                )
            if resp.status_code in (301, 302, 303) and method == "POST":
                raise AuthError(
                    f"{self.registry}: token realm {where(url)} redirected a token POST "
                    f"(HTTP {resp.status_code}); not followed"
                )
            url = new
            kw.pop("params", None)  # the Location carries its own query
        raise AuthError(f"{self.registry}: token realm {where(url)}: too many redirects")


def _short(e: Exception) -> str:
    """An exception's message without URLs' query strings (they can carry tokens)."""
    text = str(e)
    text = re.sub(r"\?[^\s'\"]*", "?…", text)
    return text[:300]
