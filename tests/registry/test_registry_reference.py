"""Image references parse as Docker parses them, and bad ones are refused with a reason."""

import pytest

from ociforge.errors import InvalidInput
from ociforge.oci.reference import Reference, normalize_registry

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, registry, repo, tag, digest",
    [
        ("python", "docker.io", "library/python", "latest", ""),
        ("python:3.11-slim", "docker.io", "library/python", "3.11-slim", ""),
        ("user/model", "docker.io", "user/model", "latest", ""),
        ("index.docker.io/user/model:1", "docker.io", "user/model", "1", ""),
        ("docker://ghcr.io/org/model:v1", "ghcr.io", "org/model", "v1", ""),
        ("localhost/m", "localhost", "m", "latest", ""),
        ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", ""),
        ("127.0.0.1:5000/m@" + D, "127.0.0.1:5000", "m", "", D),
        ("[::1]:5000/m:t@" + D, "[::1]:5000", "m", "t", D),
        ("reg.example.com/a_b/c__d/e-f.g:T_1", "reg.example.com", "a_b/c__d/e-f.g", "T_1", ""),
    ],
)
def test_parse(text, registry, repo, tag, digest):
    r = Reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repo, tag, digest)
    assert Reference.parse(str(r)) == r


def test_properties():
    r = Reference.parse("python")
    assert r.api_host == "registry-1.docker.io"
    assert not r.is_loopback
    assert Reference.parse("127.0.0.1:5000/x").is_loopback
    assert Reference.parse("[::1]:5000/x").is_loopback
    assert Reference.parse("localhost:1/x").hostname == "localhost"
    assert Reference.parse("m:t@" + D).identifier == D


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("Python", "lowercase"),
        ("reg.io/a//b", "component"),
        ("a:bad tag", "tag"),
        ("a:" + "t" * 129, "tag"),
        ("a@sha256:abc", "digest"),
        ("a@md5:" + "a" * 32, "digest"),
        ("reg.io/-a", "component"),
    ],
)
def test_invalid(text, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        Reference.parse(text)


def test_normalize_registry():
    assert normalize_registry("https://index.docker.io/v1/") == "docker.io"
    assert normalize_registry("http://127.0.0.1:5000") == "127.0.0.1:5000"
