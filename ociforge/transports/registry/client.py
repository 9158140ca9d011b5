"""The HTTP side of the distribution API: scheme and TLS, auth, retries, redirects, errors.

One :class:`Client` per registry host. It decides once whether the registry speaks HTTPS (always
required, verified against system CAs or the user's bundle, except on loopback or with an explicit
``insecure``), learns the auth challenge from ``GET /v2/``, and then every request carries the
right ``Authorization``. Transient failures (dropped connections, 429 with ``Retry-After``,
500/502/503/504) are retried with capped exponential backoff; anything else becomes one
:class:`RegistryError` carrying the registry's own error code and message.

Redirects are followed by hand so that ``Authorization`` is dropped whenever the next hop is another
origin (blob downloads are commonly redirected to a storage bucket with its own signed URL).
Credentials go only to the origin the registry was reached at: the same scheme, host and port
(``https://reg`` and ``http://reg`` are two origins). A redirect or an upload ``Location`` that
goes from HTTPS to plain HTTP is refused unless the user chose ``insecure`` for this registry,
and even then it gets no credentials.
"""

from __future__ import annotations

import json
import random
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests
import urllib3
from requests.adapters import HTTPAdapter

from ...errors import NotFound, OciforgeError
from .auth import Authenticator, AuthError, _short, origin_of, read_capped, where
from .credentials import Credential

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "ociforge"
# Hosts (loopback or --insecure) found to speak plain HTTP, so later clients skip the TLS probe.
_PLAIN_HOSTS: dict[str, bool] = {}
_NOT_FOUND_CODES = {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "NOT_FOUND"}
# Bounded reads: every answer is streamed, and one read whole is read only this far.
MAX_ANSWER = 16 << 20  # an answer a caller reads whole (tag lists, referrers...)
MAX_ERROR_BODY = 64 << 10  # an error's JSON; a longer one is reported without its detail


class RegistryError(OciforgeError):
    """A request the registry refused; ``code``/``message`` are the registry's own."""

    def __init__(self, text: str, *, status: int = 0, code: str = "", message: str = "") -> None:
        super().__init__(text)
        self.status, self.code, self.message = status, code, message


class RegistryNotFound(RegistryError, NotFound):
    """A repository, tag, manifest or blob the registry does not have."""


class TransientError(OciforgeError):
    """A failure worth retrying (raised only by requests made with ``retry=False``)."""

    def __init__(self, text: str, retry_after: float | None = None) -> None:
        super().__init__(text)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: ``attempts`` tries, delays doubling from ``base``."""

    attempts: int = 6
    base: float = 0.25
    cap: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        d = min(self.cap, self.base * (2 ** max(attempt - 1, 0)))
        return d * (0.5 + random.random() / 2)


def retry_after_of(resp: requests.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or invalid."""
    value = resp.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def is_dns_error(e: BaseException) -> bool:
    text = repr(e)
    return any(
        s in text
        for s in (
            "NameResolutionError",
            "Name or service not known",
            "nodename nor servname",
            "Temporary failure in name resolution",
            "No address associated",
        )
    )


def _is_cert_error(e: BaseException) -> bool:
    text = repr(e)
    return (
        "CERTIFICATE_VERIFY_FAILED" in text
        or "certificate verify failed" in text
        or ("hostname" in text and "match" in text)
    )


def _host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.lower()


def add_query(url: str, **params: str) -> str:
    """Add query parameters to a URL that may already have some (upload ``_state``...)."""
    parts = urllib.parse.urlsplit(url)
    extra = urllib.parse.urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


class _Adapter(HTTPAdapter):
    """Sends request bodies in 1 MiB blocks (urllib3's default 16 KiB costs CPU on big blobs)."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs.setdefault("blocksize", 1 << 20)
        super().init_poolmanager(*args, **kwargs)


def error_from(resp: requests.Response, registry: str, what: str) -> RegistryError:
    """A readable error from a registry response: status, the registry's code and message."""
    code = message = ""
    detail = ""
    try:
        content = getattr(resp, "_content", False)  # already read (a buffered answer)
        if not isinstance(content, bytes):
            content = read_capped(resp, MAX_ERROR_BODY, what)
        data = json.loads(content)
        errors = data.get("errors") or []
        if errors:
            code = str(errors[0].get("code", ""))
            message = str(errors[0].get("message", ""))
            d = errors[0].get("detail")
            if isinstance(d, str) and len(d) < 300:
                detail = d
    except (ValueError, AttributeError, TypeError, OciforgeError):
        pass  # no JSON, not the expected shape, or too long: the status says enough
    text = f"{registry}: {what} failed: HTTP {resp.status_code}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    if detail:
        text += f" ({detail})"
    cls = RegistryNotFound if resp.status_code == 404 or code in _NOT_FOUND_CODES else RegistryError
    return cls(text, status=resp.status_code, code=code, message=message)


Body = bytes | Callable[[], object] | None


class Client:
    """Requests to one registry, with auth, retries and the TLS policy applied.

    ``scopes`` are the token scopes every request asks for (``repository:NAME:pull,push`` and
    the ``pull`` scopes of mount sources); they are merged into one token.
    """

    def __init__(
        self,
        registry: str,
        *,
        api_host: str | None = None,
        loopback: bool = False,
        insecure: bool = False,
        ca_bundle: str | None = None,
        credential: Credential | None = None,
        scopes: Iterable[str] = (),
        retry: RetryPolicy | None = None,
        pool: int = 8,
        timeout: tuple[float, float] = (30.0, 300.0),
    ) -> None:
        self.registry = registry
        self.api_host = api_host or registry
        self.loopback = loopback
        self.insecure = insecure
        self.ca_bundle = ca_bundle
        self.scopes = tuple(scopes)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = _Adapter(pool_connections=4, pool_maxsize=max(pool, 4))
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.verify: bool | str = ca_bundle or True
        if insecure:
            # The user chose not to verify; one warning per request would bury the output.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.auth = Authenticator(
            registry, credential, self.session, verify=self.verify, insecure=insecure
        )
        self.base_url = ""

    def close(self) -> None:
        self.session.close()

    # -- connection setup
    def ping(self) -> None:
        """Pick the scheme and learn the auth challenge from ``GET /v2/`` (once)."""
        if self.base_url:
            return
        plain_ok = self.loopback or self.insecure
        schemes = ["https", "http"] if plain_ok else ["https"]
        if plain_ok and _PLAIN_HOSTS.get(self.api_host):
            schemes = ["http", "https"]  # plain before, in this process: try that first
        last: Exception | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.api_host}/v2/"
            verify = self.verify
            for attempt in range(1, self.retry.attempts + 1):
                # Probing HTTPS where plain HTTP is allowed: a plain server may never answer
                # the TLS handshake, so do not wait for it as long as for a real request.
                probe = (self.timeout[0], 10.0) if plain_ok and scheme == "https" else self.timeout
                try:
                    # Streamed and closed unread: only the status and headers matter here, and
                    # a body (endless, on a hostile server) is never read.
                    resp = self.session.get(url, verify=verify, timeout=probe, stream=True)
                except requests.exceptions.SSLError as e:
                    if _is_cert_error(e) and self.insecure and verify is not False:
                        verify = False
                        continue
                    if _is_cert_error(e):
                        raise OciforgeError(
                            f"{self.registry}: TLS certificate verification failed ({_short(e)}); "
                            "name the CA that signed it with --ca-bundle, or use --insecure "
                            "for a registry you trust"
                        ) from None
                    last = e  # not TLS at all: try plain HTTP where allowed
                    break
                except requests.exceptions.RequestException as e:
                    if is_dns_error(e):
                        raise OciforgeError(
                            f"cannot reach registry {self.registry}: unknown host "
                            f"{self.api_host.rsplit(':', 1)[0]!r}"
                        ) from None
                    last = e
                    if attempt < self.retry.attempts:
                        time.sleep(self.retry.delay(attempt))
                        continue
                    break
                if resp.status_code in RETRY_STATUSES and attempt < self.retry.attempts:
                    resp.close()
                    time.sleep(self.retry.delay(attempt, retry_after_of(resp)))
                    continue
                if resp.status_code == 400 and scheme != schemes[-1]:
                    # 400 on /v2/ is a protocol mismatch (plain HTTP to a TLS port, or the
                    # reverse): try the other scheme.
                    resp.close()
                    last = None
                    break
                self.base_url = f"{scheme}://{self.api_host}"
                if plain_ok:
                    _PLAIN_HOSTS[self.api_host] = scheme == "http"
                if scheme == "https" and verify is False:
                    self.verify = False
                    self.auth.verify = False
                if resp.status_code == 401:
                    self.auth.learn(resp)
                resp.close()
                return
        raise OciforgeError(
            f"cannot connect to registry {self.registry}" + (f": {_short(last)}" if last else "")
        )

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        self.ping()
        return self.base_url + path_or_url

    def resolve(self, resp: requests.Response, location: str) -> str:
        """A ``Location`` header resolved against the request URL (relative or absolute)."""
        return urllib.parse.urljoin(resp.url, location)

    def _own_origin(self, url: str) -> bool:
        """True when ``url`` is on the origin the registry was reached at (credentials may go)."""
        return bool(self.base_url) and origin_of(url) == origin_of(self.base_url)

    def _check_downgrade(self, came_from: str, url: str, what: str) -> None:
        """Refuse a move from HTTPS to plain HTTP, unless the user allowed ``insecure``."""
        if (
            urllib.parse.urlsplit(came_from).scheme.lower() == "https"
            and urllib.parse.urlsplit(url).scheme.lower() != "https"
            and not self.insecure
        ):
            raise OciforgeError(
                f"{self.registry}: {what}: refusing to go from HTTPS to plain HTTP "
                f"({where(url)}); use --insecure only if you trust the network"
            )

    # -- requests
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        what: str,
        headers: dict | None = None,
        body: Body = None,
        ok: Iterable[int] = (200,),
        stream: bool = False,
        retry: bool = True,
        scopes: Iterable[str] | None = None,
    ) -> requests.Response:
        """Send a request; returns a response whose status is in ``ok``, else raises.

        ``body`` is bytes or a callable returning a fresh body per attempt. With ``retry=False``
        transient failures raise :class:`TransientError` for the caller to recover from (uploads
        resume rather than resend).
        """
        self.ping()
        url = self.url(path_or_url)
        # An absolute URL comes from the registry (an upload Location): it may not downgrade.
        self._check_downgrade(self.base_url, url, what)
        ok = tuple(ok)
        scopes = self.scopes if scopes is None else tuple(scopes)
        attempt, reauth, force = 0, False, False
        while True:
            attempt += 1
            hdrs = dict(headers or {})
            if self._own_origin(url):
                auth = self.auth.header(scopes, force=force)
                force = False
                if auth:
                    hdrs["Authorization"] = auth
            data = body() if callable(body) else body
            try:
                resp = self._send(method, url, hdrs, data, stream, what)
            except requests.exceptions.SSLError as e:
                raise OciforgeError(
                    f"{self.registry}: TLS error during {what}: {_short(e)}"
                ) from None
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as e:
                if is_dns_error(e):
                    raise OciforgeError(
                        f"cannot reach registry {self.registry}: unknown host"
                    ) from None
                if not retry:
                    raise TransientError(f"{self.registry}: {what}: {_short(e)}") from None
                if attempt >= self.retry.attempts:
                    raise OciforgeError(
                        f"{self.registry}: {what} failed after {attempt} attempts: {_short(e)}"
                    ) from None
                time.sleep(self.retry.delay(attempt))
                continue
            status = resp.status_code
            if status == 401 and not reauth:
                # Learn (or re-learn) the challenge and try once more; a token we had sent
                # was refused or lacked a scope, so fetch a fresh one rather than reuse it.
                reauth = True
                force = "Authorization" in hdrs
                self.auth.learn(resp)
                resp.close()
                if self.auth.challenge is not None:
                    attempt -= 1
                    continue
            if status in (401, 403):
                resp.close()
                raise self.auth.refused(what)
            if status in ok:
                if not stream and method.upper() != "HEAD":
                    # a HEAD answer has no body: its Content-Length is the blob's (GiBs for a
                    # model layer), not something to read
                    self._buffer(resp, what)
                return resp
            if status in RETRY_STATUSES:
                after = retry_after_of(resp)
                resp.close()
                if not retry:
                    raise TransientError(f"{self.registry}: {what}: HTTP {status}", after)
                if attempt < self.retry.attempts:
                    time.sleep(self.retry.delay(attempt, after))
                    continue
            try:
                raise error_from(resp, self.registry, what)
            finally:
                resp.close()

    def _buffer(self, resp: requests.Response, what: str) -> None:
        """Read an answer whole, but no further than :data:`MAX_ANSWER` (then it is an error)."""
        try:
            body = read_capped(resp, MAX_ANSWER, what)
        except OciforgeError as e:
            resp.close()
            raise RegistryError(f"{self.registry}: {e}", status=resp.status_code) from None
        resp._content = body  # what requests itself does when it reads a body
        resp._content_consumed = True
        resp.close()  # read to the end: the connection goes back to the pool

    def _send(self, method, url, headers, data, stream, what="a request") -> requests.Response:
        for _hop in range(10):
            verify = self.verify if _host_of(url) == self.api_host.lower() else (not self.insecure)
            resp = self.session.request(
                method,
                url,
                headers=headers,
                data=data,
                stream=True,  # bodies are read by the caller or by _buffer, always bounded
                allow_redirects=False,
                verify=verify,
                timeout=self.timeout,
            )
            if (
                resp.status_code in REDIRECTS
                and method in ("GET", "HEAD")
                and "Location" in resp.headers
            ):
                new = urllib.parse.urljoin(url, resp.headers["Location"])
                resp.close()
                self._check_downgrade(url, new, what)
                if not self._own_origin(new):
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                url = new
                continue
            return resp
        raise OciforgeError(f"{self.registry}: too many redirects")


__all__ = [
    "AuthError",
    "Client",
    "RegistryError",
    "RegistryNotFound",
    "RetryPolicy",
    "TransientError",
    "add_query",
    "error_from",
]
