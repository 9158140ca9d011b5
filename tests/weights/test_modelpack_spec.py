"""The ModelPack artifact holds what CNCF ModelPack's model-spec v1 requires.

Written from the spec (modelpack/model-spec ``docs/spec.md``, ``docs/config.md``,
``docs/annotations.md``, ``specs-go/v1``), not from our code: the manifest's mediaType and
artifactType, the config's media type and its REQUIRED ``descriptor``, ``config`` and ``modelfs``
(``type: layers``, ``diffIds``: the sha256 of each layer's uncompressed content, in order), the
layer media types and the ``org.cncf.model.filepath`` annotation, and reproducible tar layers
(sorted names, constant owners and times).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import re
import tarfile

import pytest

import ociforge
from ociforge.transports.transport import open_source

MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MT = "application/vnd.cncf.model.config.v1+json"
LAYER_MT = re.compile(
    r"^application/vnd\.cncf\.model\.(weight|weight\.config|doc|code|dataset)\.v1\."
    r"(raw|tar|tar\+gzip|tar\+zstd)$"
)
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _blob(img, desc) -> bytes:
    with img.source.open_blob(desc) as f:
        return f.read()


@pytest.mark.parametrize("layer_format", ["tar", "raw"])
def test_manifest_and_config_follow_the_spec(tmp_path, model_dir, monkeypatch, layer_format):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ociforge.weights(
        [model_dir],
        to=f"oci:{tmp_path / 'pack'}:v1",
        format="modelpack",
        name="tiny",
        version="1.0",
        layer_format=layer_format,
        metadata={"licenses": "Apache-2.0", "paramSize": "8m"},
    )
    img = open_source(f"oci:{tmp_path / 'pack'}:v1")
    m = json.loads(img.raw_manifest)

    # manifest (docs/spec.md)
    assert m["schemaVersion"] == 2
    assert m["mediaType"] == MANIFEST_MT
    assert m["artifactType"] == ARTIFACT_TYPE
    assert m["config"]["mediaType"] == CONFIG_MT
    raw_config = _blob(img, img.manifest.config)
    assert m["config"]["digest"] == "sha256:" + hashlib.sha256(raw_config).hexdigest()
    assert m["config"]["size"] == len(raw_config)
    assert m["layers"], "a model artifact has layers"

    # config (docs/config.md): descriptor, config, modelfs are REQUIRED
    cfg = json.loads(raw_config)
    assert isinstance(cfg["descriptor"], dict) and isinstance(cfg["config"], dict)
    d = cfg["descriptor"]
    assert d["name"] == "tiny" and d["version"] == "1.0" and d["licenses"] == ["Apache-2.0"]
    assert RFC3339.match(d["createdAt"])
    assert (
        dt.datetime.fromisoformat(d["createdAt"].replace("Z", "+00:00")).timestamp() == 1700000000
    )
    assert cfg["config"]["format"] == "safetensors" and cfg["config"]["paramSize"] == "8m"
    fs = cfg["modelfs"]
    assert fs["type"] == "layers"
    assert len(fs["diffIds"]) == len(m["layers"])
    assert all(DIGEST.match(x) for x in fs["diffIds"])
    assert "diff_ids" not in fs  # v1 spells it diffIds

    paths = set()
    for layer, diff_id in zip(m["layers"], fs["diffIds"], strict=True):
        assert LAYER_MT.match(layer["mediaType"]), layer["mediaType"]
        assert layer["mediaType"].endswith("." + ("raw" if layer_format == "raw" else "tar"))
        blob = _blob(img, img.manifest.layers[m["layers"].index(layer)])
        assert layer["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert layer["size"] == len(blob)
        plain = gzip.decompress(blob) if layer["mediaType"].endswith("+gzip") else blob
        assert diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()  # the layer's DiffID
        path = layer["annotations"]["org.cncf.model.filepath"]
        paths.add(path)
        meta = json.loads(layer["annotations"]["org.cncf.model.file.metadata+json"])
        assert {"name", "mode", "uid", "gid", "size", "mtime", "typeflag"} <= meta.keys()
        original = (model_dir / path).read_bytes()
        assert meta["size"] == len(original)
        role = LAYER_MT.match(layer["mediaType"]).group(1)
        if path.endswith(".safetensors"):
            assert role == "weight"  # and weights are not compressed (spec.md, implementers' note)
            assert not layer["mediaType"].endswith("+gzip")
        if layer_format == "raw":
            assert plain == original
            continue
        with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
            members = tf.getmembers()
            names = [t.name for t in members]
            assert names == sorted(names)  # lexicographical order (spec.md, Reproducibility)
            for t in members:
                assert (t.uid, t.gid, t.uname, t.gname) == (0, 0, "", "")
                assert t.mtime == 1700000000
            assert tf.extractfile(path).read() == original
    assert paths == {str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file()}


def test_roles_by_file(tmp_path, model_dir):
    res = ociforge.weights([model_dir], to=f"oci:{tmp_path / 'p'}", format="modelpack")
    roles = {
        d.annotations["org.cncf.model.filepath"]: d.media_type.split("model.")[1]
        for d in res.layers
    }
    assert roles == {
        "README.md": "doc.v1.tar",
        "config.json": "weight.config.v1.tar",
        "data/eval.csv": "dataset.v1.tar",
        "handler.py": "code.v1.tar",
        "model.safetensors": "weight.v1.tar",
        "tokenizer.json": "weight.config.v1.tar",
    }
