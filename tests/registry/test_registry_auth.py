"""Authentication against real registries: htpasswd over TLS, and tokens from a token server."""

import io

import pytest
import requests

from ociforge.transports.progress import LineProgress
from ociforge.transports.registry import remote as registry
from ociforge.transports.registry.auth import AuthError, merge_scopes, parse_challenges
from ociforge.transports.registry.credentials import Credential


def test_parse_challenges():
    [c] = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/python:pull,push"'
    )
    assert c.scheme == "bearer" and c.realm == "https://auth.docker.io/token"
    assert c.params["scope"] == "repository:library/python:pull,push"
    both = parse_challenges('Basic realm="x", Bearer realm="y",service=s')
    assert [c.scheme for c in both] == ["basic", "bearer"] and both[1].params["service"] == "s"
    assert parse_challenges("") == []


def test_merge_scopes():
    assert merge_scopes(
        ["repository:a:pull", "repository:a:push", "repository:b:pull", "repository:a:pull"]
    ) == ("repository:a:pull,push", "repository:b:pull")


def test_basic_auth_over_tls(tls_registry, image_factory, no_credentials):
    img = image_factory()
    good = (tls_registry.username, tls_registry.password)
    res = registry.push(
        img, tls_registry.ref("auth/basic:1"), ca_bundle=tls_registry.ca_file, auth=good
    )
    assert res.blobs_pushed == 2
    back = registry.pull(
        tls_registry.ref("auth/basic:1"), ca_bundle=tls_registry.ca_file, auth=good
    )
    assert back.digest == img.digest


def test_wrong_password_names_registry_and_source_not_secret(
    tls_registry, image_factory, no_credentials
):
    img = image_factory()
    bad = Credential("alice", "wrong-pw-123", source="~/.docker/config.json auths")
    with pytest.raises(AuthError) as e:
        registry.push(img, tls_registry.ref("auth/bad:1"), ca_bundle=tls_registry.ca_file, auth=bad)
    msg = str(e.value)
    assert tls_registry.host in msg and "~/.docker/config.json" in msg and "alice" in msg
    assert "wrong-pw-123" not in msg
    assert tls_registry.tags("auth/bad") == []


def test_missing_credentials_say_where_we_looked(tls_registry, no_credentials):
    with pytest.raises(AuthError, match="config.json") as e:
        registry.pull(tls_registry.ref("auth/none:1"), ca_bundle=tls_registry.ca_file)
    assert "ociforge login" in str(e.value)


def test_tls_is_verified_unless_insecure(tls_registry, image_factory, no_credentials, fast_retry):
    img = image_factory()
    good = (tls_registry.username, tls_registry.password)
    with pytest.raises(Exception, match="certificate") as e:
        registry.push(img, tls_registry.ref("auth/tls:1"), auth=good, retry=fast_retry)
    assert "--ca-bundle" in str(e.value)
    res = registry.push(img, tls_registry.ref("auth/tls:1"), auth=good, insecure=True)
    assert res.digest == img.digest


def test_credentials_from_docker_config(tls_registry, image_factory, no_credentials):
    import base64
    import json

    (no_credentials / ".docker").mkdir()
    auth = base64.b64encode(f"{tls_registry.username}:{tls_registry.password}".encode()).decode()
    (no_credentials / ".docker/config.json").write_text(
        json.dumps({"auths": {tls_registry.host: {"auth": auth}}})
    )
    img = image_factory()
    res = registry.push(img, tls_registry.ref("auth/file:1"), ca_bundle=tls_registry.ca_file)
    assert res.digest == img.digest


def test_token_auth_one_token_per_scope_set(token_registry, index_factory, no_credentials):
    ts = token_registry.token_server
    idx = index_factory()
    cred = (token_registry.username, token_registry.password)
    before = len(ts.requests)
    out = io.StringIO()
    res = registry.push(
        idx, token_registry.ref("tok/model:1"), auth=cred, progress=LineProgress(out)
    )
    asked = ts.requests[before:]
    # 4 blobs, 3 manifests, a dozen requests: one token, asked for pull+push.
    assert len(asked) == 1 and asked[0].scopes == ["repository:tok/model:pull,push"]
    assert res.blobs_pushed == 4
    assert token_registry.password not in out.getvalue() and "pushed" in out.getvalue()


def test_token_push_with_mount_merges_scopes(token_registry, image_factory, no_credentials):
    ts = token_registry.token_server
    cred = (token_registry.username, token_registry.password)
    base = image_factory()
    registry.push(base, token_registry.ref("tok/base:1"), auth=cred)
    pulled = registry.pull(token_registry.ref("tok/base:1"), auth=cred)
    before = len(ts.requests)
    res = registry.push(pulled, token_registry.ref("tok/copy:1"), auth=cred)
    assert res.blobs_mounted == 2 and res.bytes_uploaded == 0
    assert ts.requests[before].scopes == [
        "repository:tok/base:pull",
        "repository:tok/copy:pull,push",
    ]


def test_token_wrong_password_and_anonymous(token_registry, image_factory, no_credentials):
    img = image_factory()
    with pytest.raises(AuthError) as e:
        registry.push(img, token_registry.ref("tok/bad:1"), auth=("alice", "nope-secret"))
    assert "refused" in str(e.value) and "nope-secret" not in str(e.value)
    with pytest.raises(AuthError, match="anonymous|log in|login"):
        registry.push(img, token_registry.ref("tok/anon:1"))


def test_denied_repository_is_an_auth_error(tmp_path, image_factory, no_credentials):
    from tests.support.registry import RegistryServer

    with RegistryServer(tmp_path, mode="token", users={"bob": "bobpw"}) as reg:
        reg.token_server.deny["bob"] = {"private/x"}
        with pytest.raises(AuthError, match="bob"):
            registry.push(image_factory(), reg.ref("private/x:1"), auth=("bob", "bobpw"))


def test_refresh_token_flow(token_registry, image_factory, no_credentials):
    """An identity token (what 'docker login' stores for OAuth registries) gets tokens by POST."""
    ts = token_registry.token_server
    r = requests.post(
        ts.realm,
        data={
            "grant_type": "password",
            "username": token_registry.username,
            "password": token_registry.password,
            "service": ts.service,
            "scope": "",
        },
    )
    refresh = r.json()["refresh_token"]
    before = len(ts.requests)
    img = image_factory()
    res = registry.push(
        img, token_registry.ref("tok/refresh:1"), auth=Credential(identity_token=refresh)
    )
    assert res.digest == img.digest
    assert [q.grant_type for q in ts.requests[before:]] == ["refresh_token"]


def test_tokens_are_cached_until_they_expire(token_registry, no_credentials):
    import time

    from ociforge.oci.reference import Reference
    from ociforge.transports.registry.remote import _client

    ts = token_registry.token_server
    ts.expires_in = 1
    try:
        ref = Reference.parse(token_registry.ref("tok/cache:1"))
        client = _client(
            ref,
            insecure=False,
            ca_bundle=None,
            scopes=(),
            retry=None,
            auth=(token_registry.username, token_registry.password),
        )
        client.ping()
        before = len(ts.requests)
        scope = ["repository:tok/cache:pull"]
        first = client.auth.header(scope)
        assert client.auth.header(scope) == first and len(ts.requests) == before + 1
        client.auth.header(["repository:tok/other:pull"])
        assert len(ts.requests) == before + 2
        time.sleep(1.1)
        assert client.auth.header(scope) != first and len(ts.requests) == before + 3
    finally:
        ts.expires_in = 300
