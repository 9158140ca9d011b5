"""The CLI end to end: reproducible digests, inspect, and clear refusals that write nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from ociforge.transports.transport import open_source


def _project(root):
    (root / "model").mkdir(parents=True)
    (root / "model" / "weights.bin").write_bytes(bytes(range(256)) * 100)
    (root / "code").mkdir()
    (root / "code" / "serve.py").write_text("print('serving')\n")
    return root


def _build(cli, root, dest, **env):
    out = cli(
        "assemble",
        "--add",
        "code:/app/code",
        "--add",
        "model:/app/model",
        "--entrypoint",
        '["python3", "/app/code/serve.py"]',
        "--env",
        "PORT=8080",
        "--label",
        "org.opencontainers.image.title=demo",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "--compression",
        "zstd",
        "--to",
        f"oci:{dest}:demo",
        cwd=root,
        env={"SOURCE_DATE_EPOCH": "1700000000", **env},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().rsplit("@", 1)[1]


def test_same_inputs_same_digests_in_different_folders_and_times(tmp_path, cli):
    a = _project(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    os.utime(b / "model" / "weights.bin", (12345, 12345))
    d1 = _build(cli, a, tmp_path / "out1", OCIFORGE_CACHE=str(tmp_path / "c1"))
    d2 = _build(cli, b, tmp_path / "out2", OCIFORGE_CACHE=str(tmp_path / "c2"))
    assert d1 == d2
    assert (tmp_path / "out1" / "index.json").read_bytes() == (
        tmp_path / "out2" / "index.json"
    ).read_bytes()


def _local_base(cli, root, kind: str) -> str:
    """A small base image written to a local ``kind`` destination under ``root``."""
    (root / "base-files").mkdir(parents=True)
    (root / "base-files" / "os-release").write_text("ID=test\n")
    dest = {
        "oci": f"oci:{root / 'base'}:b",
        "oci-archive": f"oci-archive:{root / 'base.tar'}:b",
        "docker-archive": f"docker-archive:{root / 'base-docker.tar'}:base:b",
    }[kind]
    out = cli(
        "assemble", "--add", f"{root / 'base-files'}:/etc", "--platform", "linux/amd64",
        "--to", dest,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return dest


@pytest.mark.parametrize(
    ("epoch", "kinds"),
    [("1700000000", ("oci",)), (None, ("oci", "oci-archive", "docker-archive"))],
    ids=["SOURCE_DATE_EPOCH", "no-epoch"],
)
def test_same_files_in_two_folders_on_a_local_base_give_one_digest(
    tmp_path, cli, monkeypatch, epoch, kinds
):
    """Absolute --add paths and a base read from a local path, in two folders, with other file
    times, one second apart: one digest, and no local path anywhere in what was written
    (history names image paths; a local base is recorded by digest only)."""
    if epoch is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    for kind in kinds:
        digests, layouts = [], []
        for n, folder in enumerate((f"first-{kind}", f"elsewhere/second-{kind}")):
            root = _project(tmp_path / folder)
            os.utime(root / "model" / "weights.bin", (1000 + n * 99999, 1000 + n * 99999))
            base = _local_base(cli, root, kind)
            out = cli(
                "assemble", "--base", base, "--add", f"{root / 'code'}:/app/code",
                "--add", f"{root / 'model'}:/app/model", "--to", f"oci:{root / 'out'}:demo",
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            digests.append(out.stdout.strip().rsplit("@", 1)[1])
            layouts.append(root / "out")
            if n == 0:
                time.sleep(1)
        assert digests[0] == digests[1], kind
        img = open_source(f"oci:{layouts[1]}:demo")
        assert [h["created_by"] for h in json.loads(img.raw_config)["history"][-2:]] == [
            "ociforge assemble: add /app/code",
            "ociforge assemble: add /app/model",
        ]
        assert "org.opencontainers.image.base.name" not in img.manifest.annotations
        for blob in (layouts[1] / "blobs" / "sha256").iterdir():  # manifests, configs, layers
            assert str(tmp_path).encode() not in blob.read_bytes(), (kind, blob.name)


def test_a_base_is_named_only_by_a_registry_reference():
    from ociforge.transports.spec import recorded_name

    assert recorded_name("registry.example.com/team/base:1") == "registry.example.com/team/base:1"
    assert recorded_name("docker://localhost:5000/b@sha256:" + "0" * 64) == (
        "localhost:5000/b@sha256:" + "0" * 64
    )
    assert recorded_name("ociforge-base:python3.11") == "ociforge-base:python3.11"
    for local in ("oci:/home/me/base:b", "oci-archive:./b.tar", "docker-archive:/x/b.tar:n:t"):
        assert recorded_name(local) is None
    assert recorded_name("docker-daemon:base:1") is None and recorded_name(None) is None


def test_changing_one_file_changes_only_its_layer(tmp_path, cli):
    root = _project(tmp_path / "p")
    _build(cli, root, tmp_path / "out", OCIFORGE_CACHE=str(tmp_path / "c"))
    before = open_source(f"oci:{tmp_path / 'out'}:demo")
    (root / "code" / "serve.py").write_text("print('serving v2')\n")
    _build(cli, root, tmp_path / "out", OCIFORGE_CACHE=str(tmp_path / "c"))
    after = open_source(f"oci:{tmp_path / 'out'}:demo")
    assert after.digest != before.digest
    for plat in ("linux/amd64", "linux/arm64"):
        old, new = before.select(plat), after.select(plat)
        assert old.digest != new.digest and old.config_descriptor != new.config_descriptor
        assert old.layers[0] != new.layers[0]  # the code layer
        assert old.layers[1] == new.layers[1]  # the model layer is untouched
    # the same layer serves both platforms
    assert after.select("linux/amd64").layers == after.select("linux/arm64").layers


def test_inspect_table_and_json(tmp_path, cli):
    root = _project(tmp_path / "p")
    digest = _build(cli, root, tmp_path / "out")
    table = cli("inspect", f"oci:{tmp_path / 'out'}:demo")
    assert table.returncode == 0
    assert digest in table.stdout and "linux/arm64" in table.stdout and "PORT=8080" in table.stdout
    info = json.loads(cli("inspect", "--json", f"oci:{tmp_path / 'out'}:demo").stdout)
    assert info["kind"] == "index" and info["digest"] == digest
    assert [m["platform"] for m in info["manifests"]] == ["linux/amd64", "linux/arm64"]
    amd = info["manifests"][0]
    assert amd["config"]["config"]["Entrypoint"] == ["python3", "/app/code/serve.py"]
    assert len(amd["layers"]) == 2 and all(
        layer["mediaType"].endswith("+zstd") for layer in amd["layers"]
    )
    one = json.loads(
        cli("inspect", "--json", "--platform", "linux/arm64", f"oci:{tmp_path / 'out'}:demo").stdout
    )
    assert one["kind"] == "image" and one["platform"] == "linux/arm64"


def test_inspect_table_columns_are_aligned(tmp_path, cli):
    """Labels as long as the column (WorkingDir, Entrypoint) do not run into their values."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "x").write_text("x")
    dest = f"oci:{tmp_path / 'out'}:t"
    out = cli(
        "assemble", "--add", f"{tmp_path / 'app'}:/opt/app", "--platform", "linux/amd64",
        "--entrypoint", '["/usr/bin/python3.11", "-m", "app"]', "--cmd", '["serve"]',
        "--workdir", "/opt/ociforge/app", "--user", "65532", "--env", "A=1", "--expose", "8080",
        "--label", "k=v", "--to", dest,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    table = cli("inspect", dest)
    assert table.returncode == 0, table.stderr
    rows = {}
    for line in table.stdout.splitlines():
        label = line.split()[0]
        if label in ("image", "type", "Entrypoint", "Cmd", "User", "WorkingDir", "Env", "Port",
                     "Label"):  # fmt: skip
            rows[label] = line
    assert set(rows) == {"image", "type", "Entrypoint", "Cmd", "User", "WorkingDir", "Env",
                         "Port", "Label"}  # fmt: skip
    assert "WorkingDir  /opt/ociforge/app" in rows["WorkingDir"]
    assert 'Entrypoint  ["/usr/bin/python3.11", "-m", "app"]' in rows["Entrypoint"]
    # every value of the image's rows starts in the same column
    starts = {label: re.match(r"\s*\S+\s+", line).end() for label, line in rows.items()}
    assert len({v for k, v in starts.items() if k != "image"}) == 1, rows


def test_assemble_on_a_base_keeps_base_layers(tmp_path, cli):
    root = _project(tmp_path / "p")
    _build(cli, root, tmp_path / "base")
    out = cli(
        "assemble",
        "--base",
        f"oci:{tmp_path / 'base'}:demo",
        "--add",
        "model/weights.bin:/extra/w.bin",
        "--env",
        "EXTRA=1",
        "--to",
        f"oci:{tmp_path / 'out'}:on-base",
        cwd=root,
    )
    assert out.returncode == 0, out.stderr
    base = open_source(f"oci:{tmp_path / 'base'}:demo").select("linux/arm64")
    new = open_source(f"oci:{tmp_path / 'out'}:on-base").select("linux/arm64")
    assert new.layers[: len(base.layers)] == base.layers
    assert len(new.layers) == len(base.layers) + 1
    assert new.config.diff_ids[: len(base.layers)] == base.config.diff_ids
    assert len(new.config.history) == len(new.layers)
    env = new.config.config.env_dict()
    assert env["PORT"] == "8080" and env["EXTRA"] == "1"
    assert new.manifest.annotations["org.opencontainers.image.base.digest"] == base.digest


@pytest.mark.parametrize(
    "args, message",
    [
        (["--add", "code:../escape"], "escapes the image root"),
        (["--add", "missing:/x"], "cannot read missing"),
        (["--add", "code:/x", "--platform", "linux/sparc64"], "unknown platform"),
        (["--add", "code:/x", "--to-tag", "Bad Tag"], "invalid tag"),
        (["--add", "code:/x", "--env", "NOEQUALS"], "expected KEY=VALUE"),
        (["--add", "code:/x", "--entrypoint", "[1, 2]"], "JSON array of strings"),
    ],
    ids=["escape", "missing", "platform", "tag", "env", "entrypoint"],
)
def test_bad_input_is_refused_and_nothing_written(tmp_path, cli, args, message):
    root = _project(tmp_path / "p")
    dest = tmp_path / "out"
    if "--to-tag" in args:
        i = args.index("--to-tag")
        to = f"oci:{dest}:{args[i + 1]}"
        args = args[:i] + args[i + 2 :]
    else:
        to = f"oci:{dest}:ok"
    if "--platform" not in args:
        args = [*args, "--platform", "linux/amd64"]
    out = cli("assemble", *args, "--to", to, cwd=root)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not dest.exists()


def test_symlink_loop_is_refused(tmp_path, cli):
    root = _project(tmp_path / "p")
    os.symlink("b", root / "code" / "a")
    os.symlink("a", root / "code" / "b")
    out = cli(
        "assemble",
        "--add",
        "code:/app",
        "--platform",
        "linux/amd64",
        "--to",
        f"oci:{tmp_path / 'out'}",
        cwd=root,
    )
    assert out.returncode == 2 and "symlink loop" in out.stderr
    assert not (tmp_path / "out").exists()


def test_unreadable_file_is_refused(tmp_path, cli):
    root = _project(tmp_path / "p")
    secret = root / "code" / "secret.key"
    secret.write_text("k")
    secret.chmod(0)
    out = cli(
        "assemble",
        "--add",
        "code:/app",
        "--platform",
        "linux/amd64",
        "--to",
        f"oci:{tmp_path / 'out'}",
        cwd=root,
        unprivileged=True,
    )
    assert out.returncode == 2
    assert "secret.key" in out.stderr and "ermission denied" in out.stderr
    assert not (tmp_path / "out").exists()


def test_unwritable_destination_is_refused(tmp_path, cli):
    root = _project(tmp_path / "p")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for to in (
        f"oci:{ro / 'layout'}",
        f"oci-archive:{ro / 'a.tar'}",
        f"docker-archive:{ro / 'd.tar'}:x:1",
    ):
        out = cli(
            "assemble",
            "--add",
            "code:/app",
            "--platform",
            "linux/amd64",
            "--to",
            to,
            cwd=root,
            unprivileged=True,
            env={"OCIFORGE_CACHE": str(tmp_path / "cache")},
        )
        assert out.returncode == 2, (to, out.stderr)
        assert str(ro) in out.stderr and "Traceback" not in out.stderr
    assert list(ro.iterdir()) == []


def test_unknown_source_errors(tmp_path, cli):
    out = cli("inspect", f"oci:{tmp_path / 'nothing'}:x")
    assert out.returncode == 2 and "not an OCI layout" in out.stderr
    out = cli("inspect", "ftp://example/x")
    assert out.returncode == 2 and "unknown transport" in out.stderr


def test_docker_schema2_on_request(tmp_path, cli, tool):
    """Docker media types for registries that want them (skopeo reads OCI layouts of OCI types only)."""
    from tests.support.registry import RegistryServer

    root = _project(tmp_path / "p")
    with RegistryServer(tmp_path / "reg", mode="http") as reg:
        ref = reg.ref("docker/fmt:1")
        out = cli(
            "assemble",
            "--add",
            "code:/app",
            "--platform",
            "linux/amd64,linux/arm64",
            "--format",
            "docker",
            "--to",
            ref,
            cwd=root,
        )
        assert out.returncode == 0, out.stderr
        raw = json.loads(
            tool("skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}").stdout
        )
        assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
        img = open_source(ref, platform="linux/arm64")
    assert img.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert img.config_descriptor.media_type == "application/vnd.docker.container.image.v1+json"
    assert {d.media_type for d in img.layers} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
    refused = cli(
        "assemble",
        "--add",
        "code:/app",
        "--platform",
        "linux/amd64",
        "--format",
        "docker",
        "--compression",
        "zstd",
        "--to",
        f"oci:{tmp_path / 'out2'}",
        cwd=root,
    )
    assert refused.returncode == 2 and "gzip" in refused.stderr
    assert not (tmp_path / "out2").exists()
