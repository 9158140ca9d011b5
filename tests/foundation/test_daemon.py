"""The docker-daemon destination against a real Docker Engine API (podman system service)."""

from __future__ import annotations

import docker
import pytest

from ociforge.builder.assemble import Addition, assemble
from ociforge.errors import OciforgeError
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.image import ConfigChanges
from ociforge.transports.transport import write_to


def test_load_into_engine(tmp_path, engine):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print(1)\n")
    obj = assemble(
        None,
        [Addition(str(tmp_path / "app"), "/app")],
        platforms=["linux/amd64", "linux/arm64"],
        changes=ConfigChanges(entrypoint=["python3", "/app/main.py"], env={"K": "v"}),
        store=BlobStore(tmp_path / "cache"),
    )
    result = write_to(obj, "docker-daemon:ociforge-test/loaded:v1", base_url=engine)
    client = docker.DockerClient(base_url=engine)
    img = client.images.get("ociforge-test/loaded:v1")
    assert img.attrs["Architecture"] == "amd64"  # the engine's own platform
    assert img.attrs["Config"]["Entrypoint"] == ["python3", "/app/main.py"]
    assert "K=v" in img.attrs["Config"]["Env"]
    assert result.reference == "docker-daemon:ociforge-test/loaded:v1"
    write_to(obj, "docker-daemon:ociforge-test/loaded:arm", base_url=engine, platform="linux/arm64")
    assert client.images.get("ociforge-test/loaded:arm").attrs["Architecture"] == "arm64"


def test_no_engine_is_a_clear_error(tmp_path):
    obj = assemble(None, [], platforms=["linux/amd64"], store=BlobStore(tmp_path))
    with pytest.raises(OciforgeError, match="cannot reach a Docker Engine"):
        write_to(obj, "docker-daemon:x:1", base_url=f"unix://{tmp_path}/none.sock")
