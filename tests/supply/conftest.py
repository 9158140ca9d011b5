"""Fixtures for the supply-chain tests: the real cosign, a real registry, key pairs, images."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.cosign import CosignUnavailable, cosign_path
from tests.support.registry import RegistryServer

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def cosign_bin():
    try:
        return str(cosign_path())
    except CosignUnavailable as e:
        pytest.fail(f"cosign is needed for these tests and could not be had: {e}")


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("supply-reg"), mode="http") as reg:
        yield reg


@pytest.fixture
def cosign(cosign_bin):
    """Run cosign with the test password; returns the CompletedProcess (never raises)."""

    def run(*args: str, password: str = PASSWORD, cwd=None) -> subprocess.CompletedProcess:
        env = {**os.environ, "COSIGN_PASSWORD": password, "HOME": os.environ.get("HOME", "/root")}
        return subprocess.run(
            [cosign_bin, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=cwd,
        )

    return run


def cosign_verify(cosign, pub, ref: str) -> subprocess.CompletedProcess:
    return cosign(
        "verify",
        "--key",
        pub,
        "--insecure-ignore-tlog=true",
        "--allow-insecure-registry",
        ref,
    )
