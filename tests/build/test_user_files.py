"""What of the user's disk reaches an image: the code layer leaves out dotfiles, keys and
credential files (and what a ``.ociforgeignore`` names), ``files=`` ships what it names but says
when a file looks like a secret, and no setuid/setgid/sticky bit of a source tree reaches a
root-owned file of a layer."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import tarfile
import textwrap
from pathlib import Path

from ociforge.builder import layers
from ociforge.model.imports import UserCode
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.layer import entries_from_tree, write_layer
from ociforge.transports.transport import open_source

KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
SECRETS = {
    ".env": b"API_TOKEN=hunter2\n",
    ".env.production": b"DB_PASSWORD=x\n",
    ".pypirc": b"[pypi]\npassword = pypi-AgEI\n",
    ".netrc": b"machine example.com password x\n",
    ".npmrc": b"//registry.npmjs.org/:_authToken=x\n",
    ".git-credentials": b"https://u:p@example.com\n",
    ".dockercfg": b"{}",
    ".aws/credentials": b"[default]\naws_secret_access_key=x\n",
    ".ssh/id_ed25519": KEY,
    ".docker/config.json": b'{"auths": {}}',
    "id_rsa": KEY,
    "id_work": KEY,  # an id_* file holding a private key
    "deploy/server.pem": KEY,
    "deploy/server.key": b"anything",
    "deploy/credentials.json": b"{}",
}
SHIPPED = {
    "__init__.py": b"",
    "core.py": b"def f(x):\n    return x\n",
    "id_mapping.py": b"IDS = {}\n",  # a module named id_*: code, not a key
    "id_rsa.pub": b"ssh-ed25519 AAAA user@host\n",  # a public key
    "deploy/ca.pem": CERT,  # a certificate, not a private key
    "data/env.txt": b"not a dotfile\n",
}


def make_package(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def code_paths(pkg: Path) -> set[str]:
    entries = layers.code_entries([UserCode(pkg.name, pkg)])
    return {e.path.split(f"{pkg.name}/", 1)[1] for e in entries if e.kind == "file"}


def test_code_layer_leaves_out_dotfiles_and_secrets(tmp_path, caplog):
    pkg = make_package(tmp_path / "proj" / "mypkg", {**SECRETS, **SHIPPED})
    with caplog.at_level(logging.WARNING, logger="ociforge.build"):
        got = code_paths(pkg)
    assert got == set(SHIPPED)
    said = " ".join(r.getMessage() for r in caplog.records)
    for left_out in ("mypkg/.env", "mypkg/.aws/", "mypkg/id_rsa", "mypkg/deploy/server.pem"):
        assert left_out in said, said


def test_ociforgeignore_beside_and_in_the_package(tmp_path):
    proj = tmp_path / "proj"
    pkg = make_package(
        proj / "mypkg",
        {
            **SHIPPED,
            ".env.example": b"API_TOKEN=\n",
            "data/big.csv": b"1,2\n",
            "notes.txt": b"todo\n",
            "sub/notes.txt": b"todo\n",
        },
    )
    (proj / ".ociforgeignore").write_text(
        "# beside the package: paths start with its name\nmypkg/data/*.csv\n!.env.example\n"
    )
    (pkg / ".ociforgeignore").write_text("/notes.txt\n")
    got = code_paths(pkg)
    assert "data/big.csv" not in got and "notes.txt" not in got
    assert {".env.example", "sub/notes.txt", "data/env.txt"} <= got
    assert ".ociforgeignore" not in got


def test_files_ship_as_named_and_say_which_look_like_secrets(tmp_path, caplog):
    weights = make_package(
        tmp_path / "weights", {"w.bin": b"\0" * 10, ".env": b"X=1\n", "k.pem": KEY}
    )
    store = BlobStore(tmp_path / "store")
    with caplog.at_level(logging.WARNING, logger="ociforge.build"):
        [(rel, layer)] = layers.artifact_layers({"weights": str(weights)}, store, "gzip")
    with store.open_blob(layer.digest) as f, tarfile.open(fileobj=gzip.open(f)) as tf:
        names = set(tf.getnames())
    assert {"opt/ociforge/app/weights/.env", "opt/ociforge/app/weights/k.pem"} <= names
    [warning] = [r.getMessage() for r in caplog.records if "secrets" in r.getMessage()]
    assert str(weights / ".env") in warning and str(weights / "k.pem") in warning
    assert "w.bin" not in warning


def test_setuid_setgid_sticky_bits_of_source_trees_are_dropped(tmp_path):
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "tool").write_bytes(b"#!/bin/sh\n")
    (src / "lib.so").write_bytes(b"\x7fELF")
    os.chmod(src / "tool", 0o4755)
    os.chmod(src / "lib.so", 0o2644)
    os.chmod(src / "shared", 0o3777)
    os.chmod(src, 0o2755)
    modes = {e.path: e.mode for e in entries_from_tree(src, "app")}
    assert modes == {"app": 0o755, "app/shared": 0o777, "app/tool": 0o755, "app/lib.so": 0o644}
    [single] = entries_from_tree(src / "tool", "bin/tool")
    assert single.mode == 0o755
    # what the layer holds, read back
    store = BlobStore(tmp_path / "store")
    layer = write_layer(entries_from_tree(src, "app"), store, "none")
    with store.open_blob(layer.digest) as f, tarfile.open(fileobj=io.BytesIO(f.read())) as tf:
        assert all(m.mode & 0o7000 == 0 for m in tf.getmembers())
    # and only when asked, kept
    kept = {e.path: e.mode for e in entries_from_tree(src, "app", keep_special_bits=True)}
    assert kept["app/tool"] == 0o4755 and kept["app/shared"] == 0o3777


def test_cli_build_lists_the_code_layer_and_ships_no_secret(tmp_path, cli):
    proj = tmp_path / "proj"
    make_package(proj / "mypkg", {**SECRETS, **SHIPPED})
    (proj / "mypkg" / "model.py").write_text(
        textwrap.dedent("""
        class Model:
            def predict(self, x):
                return x
    """)
    )
    (proj / "serve.py").write_text("from mypkg.model import Model\n")
    out = tmp_path / "out"
    proc = cli("build", "serve.py:Model", "--to", f"oci:{out}:m", cwd=proj)
    assert proc.returncode == 0, proc.stderr
    [listing] = [line for line in proc.stdout.splitlines() if "code layer:" in line]
    assert "mypkg/model.py" in listing and "mypkg/core.py" in listing and ".env" not in listing
    assert "left out of the code layer" in proc.stderr and "mypkg/.env" in proc.stderr
    img = open_source(f"oci:{out}:m", platform="linux/amd64")
    code = next(
        d
        for h, d in zip(
            [h for h in img.config.history if not h.empty_layer], img.layers, strict=True
        )
        if h.created_by.startswith("model code: ")
    )
    with img.open_layer(code) as f, tarfile.open(fileobj=gzip.open(f)) as tf:
        names = {n.split("opt/ociforge/code/", 1)[-1] for n in tf.getnames()}
    assert "mypkg/model.py" in names
    assert not {f"mypkg/{s}" for s in SECRETS} & names
    assert not any("/." in n or n.startswith(".") for n in names), names
    result = json.loads(
        cli("build", "serve.py:Model", "--to", f"oci:{out}:m", "--json", cwd=proj).stdout
    )
    [files] = [e["files"] for e in result["layers"]["linux/amd64"] if "files" in e]
    assert "mypkg/model.py" in files and "mypkg/.env" not in files
