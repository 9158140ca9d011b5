"""Where credentials may go: redirects, upload locations and token realms that point elsewhere.

A real registry does not send its clients from HTTPS to plain HTTP, nor a token service its
refresh token to another port; a hostile server (or one in the middle) can. The servers here
(``tests/registry/hostile.py``) play that part on 127.0.0.1, and each test asserts that the
secret never arrives where it must not.
"""

from __future__ import annotations

import io
import json

import pytest
import requests

from ociforge.errors import OciforgeError
from ociforge.oci.digest import of_bytes
from ociforge.oci.manifest import Descriptor
from ociforge.transports.registry import remote as registry
from ociforge.transports.registry.auth import Authenticator, AuthError, Challenge
from ociforge.transports.registry.client import Client, RetryPolicy
from ociforge.transports.registry.credentials import Credential
from ociforge.transports.registry.upload import Uploader
from tests.registry.hostile import Reply, Server, endless
from tests.support.registry import make_ca

ONE_TRY = RetryPolicy(attempts=1, base=0.01, cap=0.01)
SECRET = "pw-never-on-http"


def _auth_headers(seen, scheme):
    return [
        v
        for s in seen
        if s.scheme == scheme
        for k, v in s.headers.items()
        if k.lower() == "authorization"
    ]


@pytest.fixture
def downgrader(tmp_path):
    """One port speaking TLS and plain HTTP: over TLS it asks for basic auth, then sends manifest
    GETs and upload sessions to ``http://`` on the same host and port."""
    ca = make_ca(tmp_path / "ca")
    box = {}

    def route(req):
        if req.scheme == "http":
            if req.method == "PUT":
                return Reply(201)
            return Reply(404, {"Content-Type": "application/json"}, b'{"errors":[]}')
        if not any(k.lower() == "authorization" for k in req.headers):
            return Reply(401, {"WWW-Authenticate": 'Basic realm="hostile"'})
        plain = f"http://127.0.0.1:{box['srv'].port}"
        if "/manifests/" in req.path:
            return Reply(307, {"Location": plain + req.path})
        if req.method == "HEAD" and "/blobs/" in req.path:
            return Reply(404)
        if req.method == "POST" and "/blobs/uploads/" in req.path:
            return Reply(202, {"Location": plain + "/v2/r/blobs/uploads/s1?_state=x"})
        return Reply(200)

    with Server(route, tls=ca, dual=True) as srv:
        box["srv"] = srv
        srv.ca_file = ca.ca_file
        yield srv


def _client(srv, insecure=False):
    return Client(
        srv.host,
        loopback=True,
        insecure=insecure,
        ca_bundle=srv.ca_file,
        credential=Credential("alice", SECRET, source="test"),
        retry=ONE_TRY,
    )


def test_manifest_redirect_to_http_is_refused(downgrader, no_credentials):
    with pytest.raises(OciforgeError, match="plain HTTP") as e:
        registry.pull(
            f"{downgrader.host}/r:1", ca_bundle=downgrader.ca_file, auth=("alice", SECRET)
        )
    assert SECRET not in str(e.value)
    assert [s for s in downgrader.seen if s.scheme == "http"] == []
    assert _auth_headers(downgrader.seen, "https")  # it did authenticate over TLS


def test_manifest_redirect_to_http_with_insecure_gets_no_credentials(downgrader, no_credentials):
    with pytest.raises(OciforgeError):
        registry.pull(
            f"{downgrader.host}/r:1",
            ca_bundle=downgrader.ca_file,
            auth=("alice", SECRET),
            insecure=True,
        )
    assert [s.method for s in downgrader.seen if s.scheme == "http"] == ["GET"]
    assert _auth_headers(downgrader.seen, "http") == []


def _push_blob(client):
    data = b"blob over a downgraded upload location"
    desc = Descriptor("application/octet-stream", of_bytes(data), len(data))
    return Uploader(client, "r").push(desc, lambda: io.BytesIO(data))


def test_upload_location_on_http_is_refused(downgrader):
    client = _client(downgrader)
    with pytest.raises(OciforgeError, match="plain HTTP"):
        _push_blob(client)
    assert [s for s in downgrader.seen if s.scheme == "http"] == []


def test_upload_location_on_http_with_insecure_gets_no_credentials(downgrader):
    client = _client(downgrader, insecure=True)
    assert _push_blob(client).outcome == "pushed"
    assert [s.method for s in downgrader.seen if s.scheme == "http"] == ["PUT"]
    assert _auth_headers(downgrader.seen, "http") == []


# -- token realms


def _token_body():
    return json.dumps({"token": "t0k", "expires_in": 300}).encode()


@pytest.fixture
def elsewhere():
    with Server(lambda req: Reply(200, {"Content-Type": "application/json"}, _token_body())) as s:
        yield s


@pytest.mark.parametrize("status", [307, 308, 302])
def test_token_post_does_not_follow_a_redirect_off_the_realm(elsewhere, status):
    def route(req):
        return Reply(status, {"Location": f"{elsewhere.url}/token"})

    with Server(route) as realm:
        auth = Authenticator(
            "127.0.0.1:1", Credential(identity_token="refresh-SECRET"), requests.Session()
        )
        auth.challenge = Challenge("bearer", {"realm": f"{realm.url}/token", "service": "s"})
        with pytest.raises(AuthError, match="redirect") as e:
            auth.header(["repository:r:pull"])
    assert "refresh-SECRET" not in str(e.value)
    assert elsewhere.seen == []
    assert [s.method for s in realm.seen] == ["POST"]


def test_token_get_does_not_follow_a_redirect_off_the_realm(elsewhere):
    with Server(lambda req: Reply(307, {"Location": f"{elsewhere.url}/token"})) as realm:
        auth = Authenticator("127.0.0.1:1", Credential("alice", SECRET), requests.Session())
        auth.challenge = Challenge("bearer", {"realm": f"{realm.url}/token"})
        with pytest.raises(AuthError, match="redirect"):
            auth.header(["repository:r:pull"])
    assert elsewhere.seen == []


def test_token_redirect_within_the_realm_is_followed():
    def route(req):
        if req.path.startswith("/token2"):
            return Reply(200, {"Content-Type": "application/json"}, _token_body())
        return Reply(307, {"Location": "/token2"})

    with Server(route) as realm:
        auth = Authenticator(
            "127.0.0.1:1", Credential(identity_token="refresh-SECRET"), requests.Session()
        )
        auth.challenge = Challenge("bearer", {"realm": f"{realm.url}/token", "service": "s"})
        assert auth.header(["repository:r:pull"]) == "Bearer t0k"
    assert [(s.method, s.path.split("?")[0]) for s in realm.seen] == [
        ("POST", "/token"),
        ("POST", "/token2"),
    ]
    assert b"refresh-SECRET" in realm.seen[1].body


# -- endless answers


def _refused(fn):
    """The error an endless answer ends in: the caller asserts it names the limit (a client
    that read on forever would never get here; pytest-timeout stops such a run)."""
    with pytest.raises(OciforgeError) as e:
        fn()
    return str(e.value)


def test_endless_token_answer_is_cut(no_credentials):
    with Server(lambda req: Reply(200, {"Content-Type": "application/json"}, endless())) as realm:
        auth = Authenticator("127.0.0.1:1", Credential("alice", SECRET), requests.Session())
        auth.challenge = Challenge("bearer", {"realm": f"{realm.url}/token?x=query-secret"})
        msg = _refused(lambda: auth.header(["repository:r:pull"]))
    assert "limit" in msg and realm.host in msg
    assert SECRET not in msg and "query-secret" not in msg


def test_endless_ping_and_error_answers_are_not_read_whole(no_credentials):
    """/v2/ answers 200 with a body that never ends; a manifest GET answers 500... forever."""

    def route(req):
        if req.path == "/v2/":
            return Reply(200, {}, endless())
        return Reply(400, {"Content-Type": "application/json"}, endless())

    with Server(route) as srv:
        msg = _refused(
            lambda: registry.pull(f"{srv.host}/r:1", retry=ONE_TRY),
        )
    assert "HTTP 400" in msg


def test_endless_answer_read_whole_is_cut(no_credentials):
    def route(req):
        if req.path == "/v2/":
            return Reply(200)
        return Reply(200, {"Content-Type": "application/json"}, endless())

    with Server(route) as srv:
        client = Client(srv.host, loopback=True, retry=ONE_TRY)
        msg = _refused(lambda: client.request("GET", "/v2/r/tags/list", what="listing tags"))
    assert "listing tags" in msg and "limit" in msg


def test_head_of_a_big_blob_is_not_read(no_credentials):
    """A HEAD answer's Content-Length is the blob's size (GiBs for a model layer), not a body."""

    def route(req):
        if req.path == "/v2/":
            return Reply(200)
        return Reply(200, {"Content-Length": str(8 << 30), "Docker-Content-Digest": "x"})

    with Server(route) as srv:
        client = Client(srv.host, loopback=True, retry=ONE_TRY)
        data = b"x"
        desc = Descriptor("application/octet-stream", of_bytes(data), len(data))
        assert Uploader(client, "r").exists(desc)
