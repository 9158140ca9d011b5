"""Property tests of the credential file readers: whatever a docker config or a podman auth file
holds (any bytes, any JSON), looking up, storing and erasing credentials gives a valid result or
ociforge's own error with a message, never another exception (a traceback from deep inside
``json`` or ``base64``, or a half-read ``Credential`` with a number for a password)."""

from __future__ import annotations

import base64
import json
import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ociforge.errors import OciforgeError
from ociforge.transports.registry import credentials as creds

REG = "reg.example.com"
FUZZ = settings(
    deadline=None,
    derandomize=True,
    max_examples=1200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_b64ish = st.one_of(
    st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode()),
    st.text(alphabet=string.ascii_letters + string.digits + "+/=:", max_size=24),
    st.sampled_from(
        [base64.b64encode(b"alice:pw").decode(), base64.b64encode(b"\xff\xfe:x").decode()]
    ),
)
_keys = st.sampled_from(
    [
        REG,
        f"https://{REG}",
        f"http://{REG}/",
        f"{REG}/team",
        f"{REG}/team/model",
        "docker.io",
        creds.HUB_KEY,
        "",
        "/",
        "https://",
        f" {REG} ",
    ]
) | st.text(max_size=20)
_entries = st.dictionaries(
    st.sampled_from(["auth", "username", "password", "identitytoken", "registrytoken", "email"]),
    _b64ish | json_values,
    max_size=5,
)
_helper_names = st.sampled_from(["fake", "", "../../bin/sh", "a/b", "-x"]) | json_values
configs = st.fixed_dictionaries(
    {},
    optional={
        "auths": st.dictionaries(_keys, _entries | json_values, max_size=4) | json_values,
        "credHelpers": st.dictionaries(_keys, _helper_names, max_size=2) | json_values,
        "credsStore": _helper_names,
    },
)
files = st.one_of(
    st.binary(max_size=200),
    configs.map(lambda c: json.dumps(c).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 100_000),  # nesting deeper than json's recursion limit
    st.just(b'{"auths": {"' + REG.encode() + b'": {"auth": "\xff\xfe"}}}'),
)


@pytest.fixture(scope="module")
def place():
    with tempfile.TemporaryDirectory(prefix="ociforge-credfuzz-") as d:
        root = Path(d)
        (root / "home" / ".docker").mkdir(parents=True)
        (root / "bin").mkdir()
        yield root


@pytest.fixture
def env(place, monkeypatch):
    """HOME in a scratch folder, no credential variables, and no credential helpers on PATH."""
    monkeypatch.setenv("HOME", str(place / "home"))
    monkeypatch.setenv("PATH", str(place / "bin"))
    for var in (
        "DOCKER_CONFIG",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        "OCIFORGE_REGISTRY_USERNAME",
        "OCIFORGE_REGISTRY_PASSWORD",
        "OCIFORGE_REGISTRY",
    ):
        monkeypatch.delenv(var, raising=False)
    return place / "home" / ".docker" / "config.json"


def _valid(cred) -> None:
    if cred is None:
        return
    assert isinstance(cred, creds.Credential)
    for value in (cred.username, cred.password, cred.identity_token, cred.registry_token):
        assert isinstance(value, str)
    assert "***" in repr(cred)


def _ours(e: OciforgeError) -> None:
    assert str(e).strip(), "an error without a message"


@FUZZ
@given(data=files, repository=st.sampled_from(["", "team", "team/model", "other"]))
def test_finding_credentials_in_any_file(env, data, repository):
    env.write_bytes(data)
    for registry in (REG, "docker.io"):
        try:
            _valid(creds.find(registry, repository))
        except OciforgeError as e:
            _ours(e)


@pytest.fixture
def no_fsync(monkeypatch):
    """Thousands of atomic writes: the disk's flushes are not what this test is about."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@FUZZ
@given(data=files)
def test_storing_and_erasing_over_any_file(env, no_fsync, data):
    env.write_bytes(data)
    try:
        where = creds.store(REG, creds.Credential("alice", "pw-1"), env)
        assert isinstance(where, str)
        back = creds.find(REG)
        if where != str(env) and "credential helper" not in where:
            assert back is not None and back.password == "pw-1"
    except OciforgeError as e:
        _ours(e)
    env.write_bytes(data)
    try:
        assert creds.erase(REG, env) in (True, False)
    except OciforgeError as e:
        _ours(e)


def test_a_helper_name_is_never_a_path(env, tmp_path, monkeypatch):
    """``credsStore: "/../evil"`` names no helper: it is refused, never looked up as a path
    (``docker-credential-/../evil`` is ``./evil`` to ``shutil.which``) and never run."""
    marker = tmp_path / "ran"
    (tmp_path / "docker-credential-").mkdir()
    evil = tmp_path / "evil"
    evil.write_text(f"#!/bin/sh\n: > {marker}\n")  # a shell builtin: PATH is empty here
    evil.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    for name in ("/../evil", "../../bin/sh", "-x", ""):
        env.write_text(json.dumps({"credsStore": name, "credHelpers": {}}))
        try:
            creds.find(REG)
        except creds.CredentialError as e:
            assert "helper" in str(e)
        env.write_text(json.dumps({"credHelpers": {REG: name}}))
        with pytest.raises(creds.CredentialError, match="helper"):
            creds.find(REG)
    assert not marker.exists()
