"""Bases built from the committed recipes and locks: they run, they are reproducible, their Python
is known, and foreign images (OCI layout, docker-archive, registry) work as bases too."""

from __future__ import annotations

import http.server
import os
import shutil
import ssl
import threading

import pytest

from ociforge.bases import base, pythoninfo
from ociforge.errors import DigestMismatch, NotFound
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.image import append, store_source
from ociforge.oci.layer import Entry, Layer, write_layer
from ociforge.oci.platform import Platform
from ociforge.transports.transport import open_source, write_to
from tests.support import rootfs
from tests.support.registry import make_ca

AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")
CHECK = "import ssl, sqlite3, json, zoneinfo, ctypes, os; print(ssl.OPENSSL_VERSION, os.getuid(), zoneinfo.ZoneInfo('Europe/Paris'), ssl.create_default_context().cert_store_stats()['x509_ca'])"


def _check_output(out: str, uid: int) -> None:
    assert out.startswith("OpenSSL 3."), out
    ver, who, tz, cas = out.rsplit(" ", 3)
    assert (int(who), tz, int(cas) > 100) == (uid, "Europe/Paris", True), out


def test_amd64_base_runs_python_as_nonroot_under_bwrap(bookworm, unpacked):
    if why := rootfs.can_run(AMD64):
        pytest.fail(
            f"cannot run images here: {why} (scripts/test installs bubblewrap and qemu-user-static)"
        )
    img = bookworm[AMD64]
    proc = rootfs.run(
        unpacked["amd64"], ["/usr/bin/python3", "-c", CHECK], env=img.config.config.env_dict()
    )
    assert proc.returncode == 0, proc.stderr
    _check_output(proc.stdout.strip(), 65532)
    assert img.config.config.user == "65532:65532"
    home = rootfs.run(
        unpacked["amd64"],
        [
            "/usr/bin/python3",
            "-c",
            "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_dir, oct(os.stat('/tmp').st_mode & 0o7777), os.path.exists('/bin/sh'))",
        ],
    )
    assert home.stdout.split() == ["/home/nonroot", "0o1777", "False"], home.stderr


def test_arm64_base_runs_python_under_qemu(bookworm, unpacked):
    if why := rootfs.can_run(ARM64):
        pytest.fail(
            f"cannot run images here: {why} (scripts/test installs bubblewrap and qemu-user-static)"
        )
    env = bookworm[ARM64].config.config.env_dict()
    direct = rootfs.run(
        unpacked["arm64"], ["/usr/bin/python3.11", "-c", CHECK], ARM64, env=env, qemu="direct"
    )
    assert direct.returncode == 0, direct.stderr
    _check_output(direct.stdout.strip(), os.getuid())
    sandboxed = rootfs.run(
        unpacked["arm64"],
        ["/usr/bin/python3", "-c", "import platform, os; print(platform.machine(), os.getuid())"],
        ARM64,
        env=env,
    )
    assert sandboxed.stdout.split() == ["aarch64", "65532"], sandboxed.stderr


def test_labels_say_where_python_is(bookworm):
    info = pythoninfo.python_info(bookworm[AMD64])
    assert info.version.startswith("3.11.") and info.path == "/usr/bin/python3.11"
    assert (info.libc, info.libc_version, info.site_packages) == (
        "glibc",
        (2, 36),
        "/opt/ociforge/site-packages",
    )


def test_two_builds_give_identical_digests(bookworm, tmp_path, monkeypatch):
    first = bookworm[AMD64]
    # A fresh cache except for the .debs: every layer and the config are written again.
    old_cache = os.environ["OCIFORGE_CACHE"]
    new_cache = tmp_path / "cache"
    shutil.copytree(os.path.join(old_cache, "debs"), new_cache / "debs")
    monkeypatch.setenv("OCIFORGE_CACHE", str(new_cache))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "12345")  # the lock's date is used, not this
    again = base.build_platform(base.load_recipe("python3.11-bookworm"), AMD64)
    assert again.digest == first.digest
    assert [d.digest for d in again.layers] == [d.digest for d in first.layers]
    assert not (new_cache / "debian-indexes").exists()  # built from the lock, no index needed


def test_tampered_deb_in_mirror_fails_the_build_and_caches_nothing(
    recipe_copy, http_dir, tmp_path, monkeypatch
):
    root, url = http_dir
    recipe = base.load_recipe(recipe_copy)
    lock = base.read_lock(recipe, "amd64")
    first = lock.packages[0]
    (root / first.filename).parent.mkdir(parents=True)
    (root / first.filename).write_bytes(b"!<arch>\nnot the real package")
    monkeypatch.setenv("OCIFORGE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(DigestMismatch, match=rf"{first.name}_.*expected sha256:{first.sha256}"):
        base.build_platform(recipe, AMD64, mirror=url)
    cache = tmp_path / "empty-cache"
    assert not list((cache / "debs").glob("*.deb"))
    assert not (cache / "bases").exists()


def _foreign(img, store):
    """The same layers as ``img`` under a config without ociforge's labels (a 'foreign' base)."""
    layers = [Layer(d, diff) for d, diff in zip(img.layers, img.config.diff_ids, strict=True)]
    return append(None, layers, img.source, platform=img.platform, store=store)


def test_foreign_oci_layout_and_docker_archive_bases(bookworm, tmp_path, tool):
    store = BlobStore(tmp_path / "store")
    foreign = _foreign(bookworm[AMD64], store)
    assert "dev.ociforge.python.path" not in foreign.config.config.labels
    write_to(foreign, f"oci:{tmp_path / 'layout'}:foreign")
    tool(
        "skopeo",
        "copy",
        f"oci:{tmp_path / 'layout'}:foreign",
        f"docker-archive:{tmp_path / 'foreign.tar'}:foreign:1",
    )
    for spec in (
        f"oci:{tmp_path / 'layout'}:foreign",
        f"docker-archive:{tmp_path / 'foreign.tar'}",
    ):
        img = open_source(spec)
        info = pythoninfo.python_info(img)
        assert (info.version, info.path, info.libc, info.libc_version) == (
            pythoninfo.python_info(bookworm[AMD64]).version,
            "/usr/bin/python3.11",
            "glibc",
            (2, 36),
        ), spec
        # Used as a base, its layers are reused by digest, never re-packed.
        child = append(img, [], store_source(store))
        assert [d.digest for d in child.layers] == [d.digest for d in img.layers]


def test_python_image_env_and_musl_are_found(tmp_path):
    store = BlobStore(tmp_path / "store")
    layer = write_layer(
        [
            Entry.file("usr/local/bin/python3.12", b"\x7fELF", mode=0o755),
            Entry.symlink("usr/local/bin/python3", "python3.12"),
            Entry.file("lib/ld-musl-x86_64.so.1", b"\x7fELF"),
            Entry.file("lib/apk/db/installed", b"P:busybox\nV:1.36.1-r15\n\nP:musl\nV:1.2.5-r0\n"),
        ],
        store,
    )
    from ociforge.oci.image import ConfigChanges

    img = append(
        None,
        [layer],
        store_source(store),
        platform=AMD64,
        changes=ConfigChanges(env={"PYTHON_VERSION": "3.12.4"}),
        store=store,
    )
    info = pythoninfo.python_info(img)
    assert (info.version, info.path, info.libc, info.libc_version) == (
        "3.12.4",
        "/usr/local/bin/python3.12",
        "musl",
        (1, 2),
    )


def test_base_without_python_is_refused_with_how_to_declare(tmp_path):
    store = BlobStore(tmp_path / "store")
    layer = write_layer([Entry.file("etc/hostname", b"x\n")], store)
    img = append(None, [layer], store_source(store), platform=AMD64, store=store)
    with pytest.raises(NotFound, match=r"no Python interpreter.*declare it: .*python_path="):
        pythoninfo.python_info(img)
    declared = pythoninfo.PythonInfo("3.12.4", "/opt/py/bin/python3.12", "glibc", (2, 31))
    assert pythoninfo.python_info(img, declared=declared) is declared


def test_registry_base(bookworm, tmp_path, tool):
    registry = pytest.importorskip(
        "ociforge.transports.registry.remote", reason="the registry client is not there yet"
    )
    from tests.support.registry import RegistryServer

    write_to(bookworm[AMD64], f"oci:{tmp_path / 'layout'}:b")
    with RegistryServer(tmp_path / "reg", mode="http") as reg:
        ref = reg.ref("bases/python:3.11")
        tool(
            "skopeo",
            "copy",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'layout'}:b",
            f"docker://{ref}",
        )
        img = open_source(ref, platform=AMD64, insecure=True) if hasattr(registry, "pull") else None
        assert img is not None
        assert pythoninfo.python_info(img).path == "/usr/bin/python3.11"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"verified hello")

    def log_message(self, *args):
        pass


def test_https_verification_with_a_ca_added_by_the_recipe(
    bookworm, unpacked, recipe_copy, tmp_path
):
    if why := rootfs.can_run(AMD64):
        pytest.fail(
            f"cannot run images here: {why} (scripts/test installs bubblewrap and qemu-user-static)"
        )
    ca = make_ca(tmp_path / "ca")
    cert, key = ca.issue("server")
    shutil.copy(ca.ca_file, recipe_copy.parent / "test-ca.pem")
    recipe_copy.write_text(
        recipe_copy.read_text() + '\n[ca_certificates]\nextra = ["test-ca.pem"]\n'
    )
    with_ca = base.build_platform(base.load_recipe(recipe_copy), AMD64)
    assert with_ca.layers[0].digest == bookworm[AMD64].layers[0].digest  # packages layer shared
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = f"import urllib.request; print(urllib.request.urlopen('https://127.0.0.1:{server.server_address[1]}/').read().decode())"
    try:
        root = rootfs.unpack(with_ca, tmp_path / "rootfs")
        ok = rootfs.run(
            root,
            ["/usr/bin/python3", "-c", code],
            env=with_ca.config.config.env_dict(),
            share_net=True,
        )
        assert ok.stdout.strip() == "verified hello", ok.stderr
        bad = rootfs.run(
            unpacked["amd64"],
            ["/usr/bin/python3", "-c", code],
            env=bookworm[AMD64].config.config.env_dict(),
            share_net=True,
        )
        assert bad.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in bad.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_cli_list_and_build(cli, tmp_path, tool):
    listed = cli("base", "list")
    assert (
        listed.returncode == 0
        and "python3.11-bookworm" in listed.stdout
        and "python3.13-trixie" in listed.stdout
    )
    built = cli(
        "base",
        "build",
        "python3.11-bookworm",
        "--platform",
        "linux/amd64,linux/arm64",
        "--to",
        f"oci:{tmp_path / 'out'}:base",
    )
    assert built.returncode == 0, built.stderr
    raw = tool("skopeo", "inspect", "--raw", f"oci:{tmp_path / 'out'}:base").stdout
    assert '"architecture":"arm64"' in raw and '"architecture":"amd64"' in raw
    bad = cli("base", "build", "no-such-recipe")
    assert bad.returncode == 2 and "no base recipe 'no-such-recipe'" in bad.stderr
