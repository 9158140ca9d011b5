"""Each model form, built into an image (linux/amd64, into an OCI layout) and served for real."""

from __future__ import annotations

import json
import runpy
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import ociforge
from ociforge.transports.transport import open_source
from tests.build.conftest import serving


def load_source(tmp_path, code: str, name: str = "model_src.py") -> dict:
    """Run model code as a script (as `ociforge build FILE:OBJ` does): its objects pickle by value."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return runpy.run_path(str(path), run_name="__ociforge_model__")


def _build(tmp_path, model, **kw):
    out = tmp_path / "out"
    result = ociforge.build(model, platforms=["linux/amd64"], to=f"oci:{out}:m", **kw)
    return result, open_source(f"oci:{out}:m", platform="linux/amd64")


def test_function(tmp_path):
    ns = load_source(
        tmp_path,
        """
        def predict(x):
            return {"sum": sum(x), "n": len(x)}
    """,
    )
    result, img = _build(tmp_path, ns["predict"], name="summer")
    with serving(img, tmp_path / "rootfs") as url:
        assert requests.post(f"{url}/predict", json=[1, 2, 3]).json()["prediction"] == {
            "sum": 6,
            "n": 3,
        }
        batch = requests.post(f"{url}/predict/batch", json=[[1], [2, 3]]).json()
        assert batch["predictions"] == [{"sum": 1, "n": 1}, {"sum": 5, "n": 2}]
        assert requests.get(f"{url}/v2/models/summer/ready").status_code == 200
    assert result.layers["linux/amd64"][-1]["what"] == "model"


def test_batch_function_gathers_requests(tmp_path):
    ns = load_source(
        tmp_path,
        """
        import os
        def predict_batch(xs):
            return [{"double": 2 * x, "batch": len(xs), "pid": os.getpid()} for x in xs]
    """,
    )
    _result, img = _build(tmp_path, ns["predict_batch"], batch_size=8, name="doubler")
    with (
        serving(img, tmp_path / "rootfs", env={"OCIFORGE_BATCH_MAX_WAIT_MS": "200"}) as url,
        ThreadPoolExecutor(8) as ex,
    ):
        answers = list(
            ex.map(lambda i: requests.post(f"{url}/predict", json=i).json()["prediction"], range(8))
        )
    assert [a["double"] for a in answers] == [2 * i for i in range(8)]
    assert max(a["batch"] for a in answers) > 1  # some requests were served by one model call


def test_object_from_the_users_own_module(tmp_path, monkeypatch):
    """A Seldon-style object whose class lives in the user's project: carried as source."""
    pkg = tmp_path / "proj" / "mymodels"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent("""
        class Scaler:
            def __init__(self, factor):
                self.factor = factor
                self.calls = 0
            def predict(self, X, feature_names=None):
                self.calls += 1
                return [v * self.factor for v in X]
            def metrics(self):
                return [{"type": "COUNTER", "key": "scaler_calls", "value": self.calls}]
            def tags(self):
                return {"scaled_by": self.factor}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path / "proj"))
    import mymodels

    result, img = _build(tmp_path, mymodels.Scaler(3), name="scaler")
    whats = [entry["what"] for entry in result.layers["linux/amd64"]]
    assert "model code: mymodels" in whats
    with serving(img, tmp_path / "rootfs") as url:
        body = requests.post(f"{url}/predict", json=[1, 2]).json()
        assert body["prediction"] == [3, 6]
        assert body["meta"]["tags"] == {"scaled_by": 3}
        assert "scaler_calls" in requests.get(f"{url}/metrics").text


def test_class_with_load_reads_its_artifact(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "w.json").write_text(json.dumps({"bias": 10}))
    ns = load_source(
        tmp_path,
        """
        import json
        class Model:
            def load(self):
                with open("weights/w.json") as f:   # relative to the image's working directory
                    self.bias = json.load(f)["bias"]
            def predict(self, x):
                return x + self.bias
    """,
    )
    result, img = _build(tmp_path, ns["Model"], files={"weights": str(weights)}, name="biased")
    whats = [entry["what"] for entry in result.layers["linux/amd64"]]
    assert whats[-2:] == ["artifact weights", "model"]
    with serving(img, tmp_path / "rootfs") as url:
        assert requests.post(f"{url}/predict", json=5).json()["prediction"] == 15
    # the same weights give the same artifact layer digest on a rebuild with another model
    ns2 = load_source(
        tmp_path,
        """
        import json
        class Model:
            def load(self):
                self.bias = 0
            def predict(self, x):
                return x
    """,
        "model2.py",
    )
    again = ociforge.build(
        ns2["Model"],
        platforms=["linux/amd64"],
        to=f"oci:{tmp_path / 'out2'}:m",
        files={"weights": str(weights)},
        name="biased",
    )
    assert again.layers["linux/amd64"][-2] == result.layers["linux/amd64"][-2]
    assert again.layers["linux/amd64"][-1] != result.layers["linux/amd64"][-1]


def test_local_test_runs_the_servers_path(tmp_path):
    ns = load_source(
        tmp_path,
        """
        def predict(x):
            if x == "boom":
                raise ValueError("bad input")
            return x.upper()
    """,
    )
    assert ociforge.test(ns["predict"], "hello")["prediction"] == "HELLO"
    assert ociforge.test_batch(ns["predict"], ["a", "b"])["predictions"] == ["A", "B"]
    with pytest.raises(Exception, match="bad input|500"):
        ociforge.test(ns["predict"], "boom")
