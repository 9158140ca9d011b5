"""The product end to end: an scikit-learn model trained here, built for linux/amd64 and
linux/arm64, pushed to a real registry as one index, pulled back by skopeo per platform, unpacked
by umoci, and served by the image's own entrypoint; predictions must equal the local model's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import sklearn
from sklearn.linear_model import LogisticRegression

import ociforge
from ociforge.transports.layout import read_layout
from ociforge.transports.transport import open_source
from tests.build.conftest import serving
from tests.support.rootfs import run

PLATFORMS = ["linux/amd64", "linux/arm64"]
REQS = [f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__}"]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 3] > 0).astype(int)
    return x, y


def _model(seed=0):
    x, y = _data(seed)
    clf = LogisticRegression(C=0.5 + seed).fit(x, y)

    def predict(rows):
        import numpy as np

        return clf.predict_proba(np.asarray(rows, dtype=float)).round(6).tolist()

    return predict, clf


def _build(predict, ref, **kw):
    return ociforge.build(
        predict,
        platforms=PLATFORMS,
        requirements=REQS,
        to=ref,
        name="sk",
        version="1.0",
        metadata={"description": "logistic regression"},
        **kw,
    )


@pytest.fixture(scope="module")
def pushed(registry, tmp_path_factory):
    predict, clf = _model(0)
    ref = registry.ref("models/sk:1")
    result = _build(predict, ref, test_sample=[[0.1, 0.2, 0.3, 0.4]])
    return result, predict, clf, ref


def test_index_in_registry_is_read_by_skopeo(pushed, tool):
    result, _p, _c, ref = pushed
    raw = json.loads(
        tool("skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}").stdout
    )
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == ["amd64", "arm64"]
    assert raw["annotations"]["org.opencontainers.image.title"] == "sk"
    assert result.digest.startswith("sha256:")
    cfg = json.loads(
        tool(
            "skopeo",
            "inspect",
            "--tls-verify=false",
            "--config",
            "--override-arch",
            "arm64",
            f"docker://{ref}",
        ).stdout
    )
    assert cfg["architecture"] == "arm64"
    assert cfg["config"]["User"] == "65532:65532"
    assert "8080/tcp" in cfg["config"]["ExposedPorts"]
    assert cfg["config"]["Labels"]["org.opencontainers.image.version"] == "1.0"


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_pulled_image_serves_the_same_predictions(pushed, tool, tmp_path, arch):
    _result, predict, clf, ref = pushed
    layout = tmp_path / "layout"
    tool(
        "skopeo",
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        arch,
        f"docker://{ref}",
        f"oci:{layout}:{arch}",
    )
    tool("umoci", "unpack", "--rootless", "--image", f"{layout}:{arch}", tmp_path / "bundle")
    assert (tmp_path / "bundle" / "rootfs" / "opt" / "ociforge" / "model" / "model.pkl").is_file()
    img = read_layout(layout, arch)
    assert img.platform.architecture == arch
    # the wheels installed for this platform import and fit a model on the image's own Python
    fit = (
        "import numpy as np; from sklearn.linear_model import LogisticRegression; "
        "x = np.random.default_rng(0).normal(size=(80, 3)); y = (x[:, 0] > 0).astype(int); "
        "print(LogisticRegression().fit(x, y).score(x, y))"
    )
    cfg = img.config.config

    def python(code: str):
        proc = run(
            tmp_path / "bundle" / "rootfs",
            [cfg.entrypoint[0], "-c", code],
            f"linux/{arch}",
            env=cfg.env_dict(),
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert float(python(fit).strip()) > 0.9
    # what the server imports at start loads from the bytecode layer, and nothing else was compiled
    loaded = (
        "import importlib.util as u, json, os, sys, pickle, ociforge_runtime.server; "
        "import gunicorn.workers.gthread; pickle.load(open('/opt/ociforge/model/model.pkl', 'rb')); "
        "mods = [m.__file__ for m in list(sys.modules.values()) "
        "if (getattr(m, '__file__', None) or '').startswith('/opt/ociforge/') "
        "and m.__file__.endswith('.py')]; "
        "print(json.dumps([len(mods), [f for f in mods if not os.path.exists(u.cache_from_source(f))]]))"
    )
    count, uncompiled = json.loads(python(loaded))
    assert count > 500 and len(uncompiled) <= count // 50, uncompiled
    site = tmp_path / "bundle" / "rootfs" / cfg.env_dict()["PYTHONPATH"].split(":")[-1].lstrip("/")
    assert not list(site.glob("sklearn/**/tests/__pycache__/*.pyc"))
    rows = _data(7)[0][:5].tolist()
    expected = clf.predict_proba(np.asarray(rows)).round(6).tolist()
    with serving(img, tmp_path / "rootfs") as url:
        r = requests.post(f"{url}/predict", json=rows, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == expected
        status = requests.get(f"{url}/status", timeout=30).json()
        assert json.dumps(status).count("logistic regression") >= 1


def test_every_so_matches_its_platform(pushed):
    """ELF machine of every shared object, per platform (x86-64 = 62, aarch64 = 183)."""
    import gzip
    import io
    import tarfile

    result, *_ = pushed
    for plat, machine in (("linux/amd64", 62), ("linux/arm64", 183)):
        img = result.image.select(plat)
        seen = 0
        ours = len(result.layers[plat])  # wheels, bytecode, runtime, model (not the base's)
        for desc in img.layers[-ours:]:
            with (
                img.open_layer(desc) as raw,
                tarfile.open(fileobj=gzip.GzipFile(fileobj=raw), mode="r|") as tf,
            ):
                for m in tf:
                    if m.isfile() and ".so" in m.name.rsplit("/", 1)[-1]:
                        head = tf.extractfile(m).read(20)
                        if head[:4] == b"\x7fELF":
                            assert int.from_bytes(head[18:20], "little") == machine, (plat, m.name)
                            seen += 1
        assert seen > 10, plat
    del io


def test_rebuild_after_model_change_pushes_one_layer(pushed, registry):
    result, *_ = pushed
    predict2, _clf2 = _model(1)
    ref = registry.ref("models/sk:1")
    second = _build(predict2, ref)
    push = second.written.details["push"]
    old = {p: [entry["digest"] for entry in layers] for p, layers in result.layers.items()}
    new = {p: [entry["digest"] for entry in layers] for p, layers in second.layers.items()}
    for plat in old:
        changed = [i for i, (a, b) in enumerate(zip(old[plat], new[plat], strict=True)) if a != b]
        assert changed == [len(new[plat]) - 1], plat  # only the model layer, the last one
    model_layer = second.layers["linux/amd64"][-1]
    # one model layer (shared by both platforms) and two configs; nothing else
    assert push.blobs_pushed == 3
    assert push.bytes_uploaded < model_layer["size"] + 64 * 1024
    assert open_source(ref).digest == second.digest != result.digest


def test_docker_daemon_destination(pushed, engine):
    import docker

    result, *_ = pushed
    from ociforge.transports.transport import write_to

    write_to(result.image, "docker-daemon:ociforge-test/sk:1", base_url=engine)
    img = docker.DockerClient(base_url=engine).images.get("ociforge-test/sk:1")
    assert img.attrs["Config"]["User"] == "65532:65532"
    assert img.attrs["Config"]["Entrypoint"][-2:] == ["-m", "ociforge_runtime"]
    assert img.attrs["Architecture"] == "amd64"
