"""``docker-daemon:NAME[:TAG]``: load an image into a Docker Engine API, through the ``docker`` package.

The engine is found as the docker CLI finds it (``DOCKER_HOST``, else the default socket), or
given as ``base_url``. Podman's ``podman system service`` speaks the same API. An engine stores
one platform per tag: the engine's own architecture unless ``platform`` names another.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import InvalidInput, OciforgeError
from ..oci.image import Image, ImageIndex
from ..oci.platform import Platform
from .dockerarchive import normalize_name, write_docker_archive
from .spec import WriteResult


def _client(base_url: str | None):
    import docker  # the docker package costs ~0.2 s to import: only when a daemon is used

    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
        return client
    except Exception as e:  # docker raises several unrelated types for "no engine here"
        where = base_url or os.environ.get("DOCKER_HOST") or "the default Docker socket"
        raise OciforgeError(f"cannot reach a Docker Engine at {where}: {e}") from None


def engine_platform(client) -> Platform:
    info = client.version()
    return Platform.parse(f"{info.get('Os', 'linux')}/{info.get('Arch', 'amd64')}")


def load(
    obj: Image | ImageIndex,
    name: str | None,
    *,
    platform: Platform | str | None = None,
    base_url: str | None = None,
    **_ignored,
) -> WriteResult:
    """Load ``obj`` (one platform of it) into the engine, tagged ``name``."""
    if not name:
        raise InvalidInput("docker-daemon: needs a NAME[:TAG]")
    client = _client(base_url)
    if isinstance(obj, ImageIndex):
        want = Platform.parse(platform) if platform else engine_platform(client)
        obj = obj.select(want)
    repo_tag = normalize_name(name)
    with tempfile.TemporaryDirectory(prefix="ociforge-load-") as tmp:
        archive = Path(tmp) / "image.tar"
        write_docker_archive(obj, archive, repo_tag)
        with open(archive, "rb") as f:
            for msg in client.api.load_image(f):
                if isinstance(msg, dict) and msg.get("error"):
                    raise OciforgeError(f"the Docker Engine refused the image: {msg['error']}")
    try:
        image = client.images.get(repo_tag)
    except Exception as e:
        raise OciforgeError(f"the Docker Engine did not keep {repo_tag}: {e}") from None
    return WriteResult(f"docker-daemon:{repo_tag}", obj.config_descriptor.digest, {"id": image.id})
