"""``ociforge copy`` between transports and registries, as a user runs it."""

import json

from ociforge.transports.layout import read_layout, write_layout
from ociforge.transports.registry import remote as registry


def test_copy_layout_to_registry_and_back(http_registry, index_factory, cli, tmp_path):
    idx = index_factory()
    src = tmp_path / "src"
    write_layout(idx, src, "v1")
    dst = http_registry.ref("cli/model:v1")
    out = cli("copy", "-q", f"oci:{src}:v1", dst)
    assert out.returncode == 0, out.stderr
    assert registry.pull(dst).digest == idx.digest
    loud = cli("copy", f"oci:{src}:v1", f"docker://{dst}")
    assert loud.returncode == 0 and idx.digest in loud.stdout
    assert "already there" in loud.stderr or "skipped" in loud.stderr
    back = cli("copy", "--platform", "linux/arm64", dst, f"oci:{tmp_path / 'back'}:arm")
    assert back.returncode == 0, back.stderr
    img = read_layout(tmp_path / "back", "arm")
    assert img.digest == idx.select("linux/arm64").digest


def test_copy_between_repositories_mounts(http_registry, index_factory, cli):
    idx = index_factory()
    registry.push(idx, http_registry.ref("cli/a:1"))
    out = cli("copy", http_registry.ref("cli/a:1"), http_registry.ref("cli/b:1"))
    assert out.returncode == 0, out.stderr
    assert "4 mounted" in out.stderr and "0 B sent" in out.stderr


def test_copy_with_creds_to_tls_registry(
    tls_registry, index_factory, cli, tmp_path, no_credentials
):
    idx = index_factory()
    write_layout(idx, tmp_path / "src", "v1")
    env = {"HOME": str(no_credentials)}
    dst = tls_registry.ref("cli/secure:1")
    args = ["copy", "-q", f"oci:{tmp_path / 'src'}:v1", dst, "--ca-bundle", tls_registry.ca_file]
    anon = cli(*args, env=env)
    assert anon.returncode == 2 and "ociforge login" in anon.stderr
    ok = cli(*args, "--dest-creds", f"{tls_registry.username}:{tls_registry.password}", env=env)
    assert ok.returncode == 0, ok.stderr
    assert tls_registry.tags("cli/secure") == ["1"]


def test_copy_bad_input(cli, http_registry, tmp_path):
    bad = cli("copy", "oci:/nonexistent-dir:x", http_registry.ref("cli/x:1"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    bad = cli("copy", http_registry.ref("cli/none:1"), f"oci:{tmp_path}/o")
    assert bad.returncode == 2 and "cli/none" in bad.stderr
    bad = cli("copy", "Bad/Ref", f"oci:{tmp_path}/o")
    assert bad.returncode == 2 and "lowercase" in bad.stderr
    bad = cli("copy", "--platform", "linux/amd64", "--all", "a", "b")
    assert bad.returncode == 2


def test_login_writes_docker_config(tls_registry, cli, no_credentials):
    env = {"HOME": str(no_credentials)}
    out = cli(
        "login",
        tls_registry.host,
        "-u",
        tls_registry.username,
        "-p",
        tls_registry.password,
        "--ca-bundle",
        tls_registry.ca_file,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    cfg = json.loads((no_credentials / ".docker/config.json").read_text())
    assert tls_registry.host in cfg["auths"]
    # logout forgets it; a second logout says so with a non-zero exit
    out = cli("logout", tls_registry.host, env=env)
    assert out.returncode == 0 and "Removed" in out.stdout
    cfg = json.loads((no_credentials / ".docker/config.json").read_text())
    assert tls_registry.host not in cfg.get("auths", {})
    again = cli("logout", tls_registry.host, env=env)
    assert again.returncode == 1 and "Not logged in" in again.stdout
