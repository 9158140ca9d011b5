"""Targets: wheel tags and marker values come from the target's parameters, never the host."""

from __future__ import annotations

import pytest

from ociforge.errors import InvalidInput
from ociforge.python.target import Target, debian_target


def test_arm64_tags_are_aarch64_down_to_manylinux2014():
    t = debian_target("linux/arm64")
    plats = t.platform_tags()
    assert plats[0] == "manylinux_2_36_aarch64"
    assert "manylinux_2_17_aarch64" in plats and "manylinux2014_aarch64" in plats
    assert not any("x86_64" in p for p in plats)
    assert not any(p.startswith("linux_") for p in plats)
    assert t.supports("numpy-2.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl")
    assert not t.supports("numpy-2.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert t.supports("six-1.0-py2.py3-none-any.whl")
    assert t.supports("cffi-1.0-cp38-abi3-manylinux_2_28_aarch64.whl")
    assert not t.supports("x-1.0-cp312-cp312-manylinux_2_17_aarch64.whl")
    assert not t.supports("x-1.0-cp311-cp311-manylinux_2_38_aarch64.whl")  # newer glibc than base


def test_trixie_and_musl():
    t = debian_target("linux/amd64", "trixie", "cu121")
    assert t.python == "3.13" and t.libc_version == (2, 41) and t.cuda == (12, 1)
    assert (
        t.platform_tags()[0] == "manylinux_2_41_x86_64" and "manylinux1_x86_64" in t.platform_tags()
    )
    m = Target.make("linux/arm64", "3.12", "musl 1.2")
    assert m.platform_tags() == [
        "musllinux_1_2_aarch64",
        "musllinux_1_1_aarch64",
        "musllinux_1_0_aarch64",
    ]


def test_marker_environment_is_the_targets():
    env = debian_target("linux/arm64").marker_environment()
    assert env["platform_machine"] == "aarch64"
    assert env["python_version"] == "3.11" and env["sys_platform"] == "linux"
    from packaging.markers import Marker

    assert Marker('platform_machine == "aarch64"').evaluate(env)
    assert not Marker('platform_machine == "x86_64"').evaluate(env)


def test_round_trip_and_bad_input():
    t = Target.make(
        "linux/amd64", "3.11.2", "manylinux_2_36", "cu12", interpreter="/usr/local/bin/python3"
    )
    assert Target.from_json(t.to_json()) == t
    for bad in (
        dict(platform="windows/amd64"),
        dict(platform="linux/amd64", python="3"),
        dict(platform="linux/amd64", libc="glibc"),
        dict(platform="linux/amd64", variant="rocm6"),
        dict(platform="linux/amd64", interpreter="python3"),
    ):
        with pytest.raises(InvalidInput):
            Target.make(**bad)
