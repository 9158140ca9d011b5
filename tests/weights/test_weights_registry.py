"""Weights through a real registry (the reference ``docker-registry``), read by the real peers:
KServe's storage initializer (``kserve-storage``) pulls the modelcar, the ``oras`` Python package
pulls the ModelPack artifact; both must get the original files byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import ociforge
from ociforge.cli import main
from ociforge.transports.registry import remote
from ociforge.transports.registry.client import RetryPolicy
from tests.registry.faultproxy import FaultProxy
from tests.weights.conftest import tree_bytes

KSERVE_PULL = """
import sys
from kserve_storage import Storage
print(Storage.download_files([sys.argv[1]], [sys.argv[2]]))
"""

ORAS_PULL = """
import json, sys
import oras.client
client = oras.client.OrasClient(insecure=True)
files = client.pull(target=sys.argv[1], outdir=sys.argv[2])
print(json.dumps(sorted(files)))
"""


def _peer(python: Path, script: str, *args: str, env: dict | None = None) -> str:
    r = subprocess.run(
        [str(python), "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    return r.stdout


def test_kserve_storage_initializer_downloads_the_modelcar(
    registry, model_dir, kserve_python, tmp_path
):
    ref = registry.ref("models/tiny:car")
    res = ociforge.weights([model_dir], to=ref)
    assert res.bytes_uploaded and res.bytes_uploaded > (9 << 20)
    out = tmp_path / "mnt-models"
    _peer(
        kserve_python,
        KSERVE_PULL,
        f"oci://{ref}",
        str(out),
        env={"KSERVE_OCI_INSECURE_REGISTRY": "true"},
    )
    assert tree_bytes(out) == tree_bytes(model_dir)

    # a re-push of the unchanged weights sends no blob bytes
    again = ociforge.weights([model_dir], to=ref)
    assert again.digest == res.digest
    assert again.bytes_uploaded == 0
    assert again.details["push"].blobs_pushed == 0


def test_cli_pushes_a_modelcar(registry, model_dir, capsys):
    ref = registry.ref("models/tiny-cli:1")
    assert main(["weights", str(model_dir), "--to", ref, "--platform", "linux/arm64", "-q"]) == 0
    pulled = registry_index(ref)
    assert [m["platform"]["architecture"] for m in pulled["manifests"]] == ["arm64"]


def registry_index(ref: str) -> dict:
    obj = remote.pull(ref)
    return json.loads(obj.raw)


def test_oras_pulls_the_modelpack(registry, model_dir, oras_python, tmp_path):
    ref = registry.ref("models/tiny:pack")
    res = ociforge.weights([model_dir], to=ref, format="modelpack", name="tiny", version="1.0")
    out = tmp_path / "oras"
    _peer(oras_python, ORAS_PULL, ref, str(out))
    # oras keeps each layer blob (named by digest: tar layers carry no title); unpacked, they
    # are the files, each at its org.cncf.model.filepath
    got: dict[str, bytes] = {}
    for desc in res.layers:
        path = desc.annotations["org.cncf.model.filepath"]
        with tarfile.open(out / desc.digest) as tf:
            names = tf.getnames()
            assert names == [path] or names[-1] == path
            got[path] = tf.extractfile(path).read()
    assert got == tree_bytes(model_dir)


def test_oras_pulls_raw_modelpack_files(registry, model_dir, oras_python, tmp_path):
    ref = registry.ref("models/tiny:raw")
    ociforge.weights([model_dir], to=ref, format="modelpack", layer_format="raw")
    out = tmp_path / "oras-raw"
    _peer(oras_python, ORAS_PULL, ref, str(out))
    assert tree_bytes(out) == tree_bytes(model_dir)


def test_cut_uploads_resume(registry, model_dir):
    """The big uncompressed layer streams from the file itself in chunks; cut connections are
    resumed by the upload code (GET on the session, then the rest), never from a copy."""
    fast = RetryPolicy(attempts=10, base=0.01, cap=0.05)
    with FaultProxy(registry.host, rates={"cut": 0.3}, only=("PATCH",), seed=3) as proxy:
        res = ociforge.weights(
            [model_dir], to=f"{proxy.host}/models/cut:1", retry=fast, chunk_size=1 << 20
        )
    assert proxy.counts["cut"] >= 1
    assert res.digest
    big = max(res.layers, key=lambda d: d.size)
    assert big.digest in registry.blob_digests("models/cut")
    registry.verify_blobs()


class _ReadsItsWeights:
    """A class model whose load() reads its weights from $OCIFORGE_WEIGHTS_DIR."""

    def load(self):
        import os

        root = os.environ["OCIFORGE_WEIGHTS_DIR"]
        with open(os.path.join(root, "config.json")) as f:
            self.config = json.load(f)
        self.size = os.path.getsize(os.path.join(root, "model.safetensors"))

    def predict(self, x):
        return {"hidden_size": self.config["hidden_size"], "weights_bytes": self.size}


def test_model_loads_weights_kserve_downloaded(
    registry, model_dir, kserve_python, tmp_path, monkeypatch
):
    """Code image and weights artifact apart: the weights pushed as a modelcar, fetched by KServe's
    storage initializer into the folder the runtime names, read there by the model's load()."""
    ref = registry.ref("models/tiny:serve")
    ociforge.weights([model_dir], to=ref)
    mnt = tmp_path / "mnt" / "models"
    _peer(
        kserve_python,
        KSERVE_PULL,
        f"oci://{ref}",
        str(mnt),
        env={"KSERVE_OCI_INSECURE_REGISTRY": "1"},
    )
    monkeypatch.setenv("OCIFORGE_WEIGHTS_DIR", str(mnt))
    out = ociforge.test(_ReadsItsWeights, [1.0])
    assert out == {"prediction": {"hidden_size": 8, "weights_bytes": 9 << 20}}


def test_weights_dir_defaults_to_kserve_mount(monkeypatch):
    import ociforge_runtime
    from ociforge_runtime.package import instantiate

    monkeypatch.setenv("OCIFORGE_WEIGHTS_DIR", "")  # recorded, so the runtime's default is undone
    monkeypatch.delenv("OCIFORGE_WEIGHTS_DIR")
    seen = {}

    class M:
        def load(self):
            seen["dir"] = os.environ.get("OCIFORGE_WEIGHTS_DIR")

        def predict(self, x):
            return x

    instantiate(M, {"kind": "class", "card": {"name": "m", "version": "1"}})
    assert seen["dir"] == "/mnt/models" == ociforge_runtime.weights_dir()


def test_repush_of_large_weights_sends_nothing(registry, tmp_path):
    """A layer bigger than any answer a client reads whole: the existence check (HEAD, whose
    Content-Length is the blob's size) must not be mistaken for an answer too large to read."""
    from tests.weights.conftest import make_model

    model = make_model(tmp_path / "big-model", big=24 << 20)
    ref = registry.ref("models/big:1")
    first = ociforge.weights([model], to=ref)
    assert first.bytes_uploaded > 24 << 20
    again = ociforge.weights([model], to=ref)
    assert again.digest == first.digest and again.bytes_uploaded == 0
