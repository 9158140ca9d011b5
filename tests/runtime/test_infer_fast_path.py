"""OIP v2 ``infer`` is answered in front of Flask (``app.fast_infer``: no request context, URL
routing or response object); every answer must be the Flask route's, byte for byte: status,
headers and body, errors included, with the same route in logs and metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ociforge_runtime import app as app_module
from ociforge_runtime.app import RuntimeFlask
from ociforge_runtime.binary import HEADER
from werkzeug.test import Client

from tests.runtime.conftest import app_for

CARD = {
    "name": "dbl",
    "version": "3",
    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1, 2]}],
}


def doubled(x):
    x = np.asarray(x, dtype=float)
    if (x < 0).any():
        raise ValueError("negative input")
    return x * 2


def v2(data, name="x", datatype="FP64", shape=(1, 2), **extra) -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "data": data}]}
        | extra
    ).encode()


def binary_request() -> tuple[bytes, dict]:
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP64", "shape": [1, 2],
                 "parameters": {"binary_data_size": 16}},
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    return header + np.array([1.5, 2.5]).tobytes(), {HEADER: str(len(header))}


JSON = {"Content-Type": "application/json"}
CASES = {
    "ok": ("/v2/models/dbl/infer", v2([1, 2]), JSON),
    "ok, versioned": ("/v2/models/dbl/versions/3/infer", v2([1, 2]), JSON),
    "ok, no content type": ("/v2/models/dbl/infer", v2([1, 2]), {}),
    "ok, request id and outputs": (
        "/v2/models/dbl/infer",
        v2([1, 2], id="r-1", outputs=[{"name": "y"}]),
        JSON,
    ),
    "binary in and out": ("/v2/models/dbl/infer", *binary_request()),
    "malformed JSON": ("/v2/models/dbl/infer", b'{"inputs": [', JSON),
    "empty body": ("/v2/models/dbl/infer", b"", JSON),
    "wrong datatype": ("/v2/models/dbl/infer", v2(["a", "b"], datatype="BYTES"), JSON),
    "wrong shape": ("/v2/models/dbl/infer", v2([1, 2, 3], shape=(1, 3)), JSON),
    "bad binary header": ("/v2/models/dbl/infer", v2([1, 2]), {HEADER: "999999"}),
    "too many JSON values": ("/v2/models/dbl/infer", v2(list(range(40)), shape=(20, 2)), JSON),
    "body over the limit": ("/v2/models/dbl/infer", v2([1, 2]) + b" " * 600, JSON),
    "model error": ("/v2/models/dbl/infer", v2([-1, 2]), JSON),
    "another model": ("/v2/models/other/infer", v2([1, 2]), JSON),
    "another version": ("/v2/models/dbl/versions/4/infer", v2([1, 2]), JSON),
}


@pytest.fixture(scope="module")
def served():
    app, predictor = app_for(doubled, card=CARD, max_json_values=30, max_request_bytes=512)
    yield app, predictor
    predictor.stop()


def answer(wsgi_app, path, body, headers, terminated):
    """Status, headers and body of one POST; ``terminated`` as gunicorn's environ says it."""
    client = Client(wsgi_app)
    extra = {"wsgi.input_terminated": True} if terminated else {}
    r = client.post(path, data=body, headers=headers, environ_base=extra)
    return r.status, list(r.headers.items()), r.get_data()


@pytest.mark.parametrize("terminated", [False, True], ids=["test client", "gunicorn's environ"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_answers_as_the_flask_route(served, monkeypatch, case, terminated):
    app, _ = served
    monkeypatch.setattr(app_module, "new_request_id", lambda: "0123456789abcdef")
    path, body, headers = CASES[case]
    fast = answer(app.wsgi_app, path, body, headers, terminated)
    assert isinstance(app, RuntimeFlask) and app.routed_wsgi_app is not None
    routed = answer(app.routed_wsgi_app, path, body, headers, terminated)
    assert fast == routed
    if case.startswith("ok"):
        assert fast[0] == "200 OK" and json.loads(fast[2])["outputs"][0]["data"] == [2.0, 4.0]


def test_infer_for_the_served_model_skips_flask_dispatch(served, monkeypatch):
    app, _ = served
    dispatched = []
    real = RuntimeFlask.dispatch_request

    def counting(self):
        dispatched.append(1)
        return real(self)

    monkeypatch.setattr(RuntimeFlask, "dispatch_request", counting)
    client = app.test_client()
    assert client.post("/v2/models/dbl/infer", data=v2([1, 2]), headers=JSON).status_code == 200
    assert client.post("/v2/models/dbl/versions/3/infer", data=v2([1, 2])).status_code == 200
    assert dispatched == []
    assert client.post("/v2/models/other/infer", data=v2([1, 2])).status_code == 404
    assert client.get("/v2/models/dbl/infer").status_code == 405
    assert len(dispatched) == 2  # another model's name, another method: Flask answers


def test_fast_path_names_the_route_in_logs_and_metrics(log_lines):
    app, predictor = app_for(doubled, card=CARD, access_log=True)
    client = app.test_client()
    assert client.post("/v2/models/dbl/infer", data=v2([1, 2])).status_code == 200
    assert client.post("/v2/models/dbl/versions/3/infer", data=v2([-1, 2])).status_code == 500
    records = log_lines()
    routes = [r.get("route") for r in records if r.get("event") in ("request", "model_error")]
    assert routes == [
        "/v2/models/<name>/infer",
        "/v2/models/<name>/versions/<version>/infer",
        "/v2/models/<name>/versions/<version>/infer",
    ]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'route="/v2/models/<name>/infer",status="200"' in metrics
    assert 'route="/v2/models/<name>/versions/<version>/infer",status="500"' in metrics
    predictor.stop()
