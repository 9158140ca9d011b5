"""Platforms, manifests and stable JSON."""

from __future__ import annotations

import json

import pytest

from ociforge.errors import InvalidInput
from ociforge.oci import mediatypes as mt
from ociforge.oci.manifest import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
    parse_manifest_bytes,
)
from ociforge.oci.platform import Platform, parse_platforms


@pytest.mark.parametrize(
    "text, expected",
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/armhf", "linux/arm/v7"),
        ("Linux/AMD64", "linux/amd64"),
    ],
)
def test_platform_normalization(text, expected):
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize(
    "text", ["linux", "linux/sparc", "plan9/amd64", "linux/arm64/v7", "", "linux//"]
)
def test_unknown_platforms_are_refused(text):
    with pytest.raises(InvalidInput, match="platform"):
        Platform.parse(text)


def test_platform_list_and_matching():
    plats = parse_platforms(["linux/amd64,linux/arm64", "linux/x86_64"])
    assert [str(p) for p in plats] == ["linux/amd64", "linux/arm64"]
    assert Platform.parse("linux/arm64").matches(
        Platform.from_json({"os": "linux", "architecture": "arm64", "variant": "v8"})
    )
    assert not Platform.parse("linux/arm/v6").matches(Platform.parse("linux/arm/v7"))
    assert Platform.parse("linux/amd64").machine == "x86_64"
    assert Platform.parse("linux/arm64").machine == "aarch64"


def test_manifest_round_trip_is_byte_stable():
    cfg = Descriptor(mt.OCI_CONFIG, "sha256:" + "a" * 64, 10)
    layer = Descriptor(mt.OCI_LAYER_GZIP, "sha256:" + "b" * 64, 20, annotations={"k": "v"})
    m = Manifest(config=cfg, layers=(layer,), annotations={"org.opencontainers.image.title": "t"})
    raw = m.to_bytes()
    assert raw == canonical_json(json.loads(raw))
    again = parse_manifest_bytes(raw)
    assert again == m and again.to_bytes() == raw
    idx = Index(
        manifests=(
            Descriptor(
                mt.OCI_MANIFEST, "sha256:" + "c" * 64, 5, platform=Platform.parse("linux/arm64")
            ),
        )
    )
    assert parse_manifest_bytes(idx.to_bytes()).to_bytes() == idx.to_bytes()


def test_config_keeps_unknown_fields():
    obj = {
        "architecture": "amd64",
        "os": "linux",
        "docker_version": "24",
        "config": {"Env": ["A=1"], "Healthcheck": {"Test": ["CMD", "true"]}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "d" * 64]},
    }
    cfg = ImageConfig.from_json(obj)
    out = cfg.to_json()
    assert out["docker_version"] == "24"
    assert out["config"]["Healthcheck"] == {"Test": ["CMD", "true"]}
    assert cfg.config.env_dict() == {"A": "1"}


@pytest.mark.parametrize("bad", ["sha256:ABC", "md5:" + "a" * 32, "sha256:" + "a" * 63])
def test_bad_digests_are_refused(bad):
    with pytest.raises(InvalidInput, match="invalid digest"):
        Descriptor(mt.OCI_CONFIG, bad, 1)
