"""Fixtures for the model-build tests: a real registry, and serving a built image for real.

An image is unpacked (``tests.support.rootfs.unpack``) and its own entrypoint started as the
image's user, under bubblewrap for linux/amd64 and ``qemu-aarch64-static`` for linux/arm64, with
the image's Env and WorkingDir; requests go over loopback.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
import requests

from tests.support.registry import RegistryServer
from tests.support.rootfs import can_run, start, unpack


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("build-reg"), mode="http") as reg:
        yield reg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(
    image,
    rootfs_dir,
    *,
    platform: str | None = None,
    ready_timeout: float = 240,
    env: dict | None = None,
):
    """Run ``image``'s entrypoint from an unpacked rootfs; yields the base URL once it is ready."""
    platform = platform or str(image.platform)
    why = can_run(platform)
    if why:
        pytest.fail(f"cannot run {platform} here: {why}")
    root = unpack(image, rootfs_dir)
    cfg = image.config.config
    port = free_port()
    full_env = {**cfg.env_dict(), "PORT": str(port), "OCIFORGE_WORKERS": "1", **(env or {})}
    uid, _, gid = (cfg.user or "0:0").partition(":")
    proc = start(
        root,
        list(cfg.entrypoint) + list(cfg.cmd or ()),
        platform,
        env=full_env,
        cwd=cfg.working_dir or "/",
        share_net=True,
        uid=int(uid),
        gid=int(gid or uid),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"the image's server exited {proc.returncode}:\n{proc.stdout.read()[-4000:]}"
                )
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(
                    f"the image's server was not ready in {ready_timeout}s:\n{proc.stdout.read()[-4000:]}"
                )
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except Exception:
                proc.kill()
