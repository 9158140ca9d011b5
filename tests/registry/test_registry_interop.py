"""What ociforge pushes, skopeo and podman read; what skopeo pushes, ociforge pulls."""

import json
import os
import shutil
import subprocess
import sys

from ociforge.oci.image import ImageIndex
from ociforge.transports.layout import write_layout
from ociforge.transports.registry import remote as registry


def test_skopeo_and_podman_read_what_ociforge_pushed(
    http_registry, index_factory, tool, podman, tmp_path
):
    idx = index_factory()
    registry.push(idx, http_registry.ref("interop/ours:1"))
    ref = f"docker://{http_registry.ref('interop/ours:1')}"
    raw = tool("skopeo", "inspect", "--tls-verify=false", "--raw", ref).stdout
    assert raw.encode() == idx.raw
    info = json.loads(
        tool("skopeo", "inspect", "--tls-verify=false", "--override-arch", "arm64", ref).stdout
    )
    assert info["Architecture"] == "arm64"
    assert info["Layers"] == [d.digest for d in idx.select("linux/arm64").layers]
    out = tmp_path / "copied"
    tool("skopeo", "copy", "--all", "--src-tls-verify=false", ref, f"oci:{out}:all")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == idx.digest
    tool(
        *podman,
        "pull",
        "--tls-verify=false",
        "--arch",
        "amd64",
        http_registry.ref("interop/ours:1"),
    )
    pinfo = json.loads(
        tool(*podman, "image", "inspect", http_registry.ref("interop/ours:1")).stdout
    )[0]
    assert pinfo["Architecture"] == "amd64"
    assert pinfo["RootFS"]["Layers"] == list(idx.select("linux/amd64").config.diff_ids)


def test_ociforge_pulls_what_skopeo_pushed(http_registry, index_factory, tool, tmp_path):
    idx = index_factory()
    layout = tmp_path / "layout"
    write_layout(idx, layout, "v1")
    dest = f"docker://{http_registry.ref('interop/theirs:1')}"
    tool("skopeo", "copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:v1", dest)
    pulled = registry.pull(http_registry.ref("interop/theirs:1"))
    assert isinstance(pulled, ImageIndex) and pulled.digest == idx.digest
    for _d, img in pulled.images():
        want = idx.select(img.platform)
        with img.open_layer(img.layers[0]) as f, want.open_layer(want.layers[0]) as g:
            assert f.read() == g.read()
    # skopeo's own conversion (docker schema 2, re-compressed or not) is read as well.
    tool(
        "skopeo",
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        "--override-arch",
        "arm64",
        f"docker://{http_registry.ref('interop/theirs:1')}",
        f"docker://{http_registry.ref('interop/theirs-v2s2:1')}",
    )
    v2 = registry.pull(http_registry.ref("interop/theirs-v2s2:1"))
    assert v2.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert v2.config.diff_ids == idx.select("linux/arm64").config.diff_ids


def test_login_is_read_back_by_skopeo(tls_registry, cli, tool, tmp_path, no_credentials):
    env = {"HOME": str(no_credentials)}
    bad = cli(
        "login",
        tls_registry.host,
        "-u",
        "alice",
        "-p",
        "wrong-pw-42",
        "--ca-bundle",
        tls_registry.ca_file,
        env=env,
    )
    assert bad.returncode == 2 and tls_registry.host in bad.stderr
    assert "wrong-pw-42" not in bad.stderr + bad.stdout
    assert not (no_credentials / ".docker/config.json").exists()
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "ociforge",
            "login",
            tls_registry.host,
            "-u",
            tls_registry.username,
            "--password-stdin",
            "--ca-bundle",
            tls_registry.ca_file,
        ],
        input=tls_registry.password + "\n",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert tls_registry.password not in ok.stdout + ok.stderr
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(tls_registry.ca_file, certs / "ca.crt")
    proc = tool(
        "skopeo",
        "inspect",
        "--cert-dir",
        str(certs),
        "--raw",
        f"docker://{tls_registry.ref('interop/login:1')}",
        check=False,
        env={**os.environ, **env},
    )
    # Authenticated: the repository is unknown, not the user.
    assert "unauthorized" not in proc.stderr.lower() and "manifest unknown" in proc.stderr.lower()
