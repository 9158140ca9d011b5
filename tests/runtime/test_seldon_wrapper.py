"""The Seldon wrapper's less common ways in, against a real server process: ``*_raw`` hooks,
``PAYLOAD_PASSTHROUGH``, ``GET /predict?json=`` and ``data.tftensor``.

``tftensor`` is checked with the real ``TensorProto`` that seldon-core ships
(``seldon_core.proto.tensorflow.core.framework``), from its own venv: the request is written and
the answer read with protobuf's own ``json_format``, as the wrapper does (it needs TensorFlow
only for ``make_ndarray``/``make_tensor_proto``, replaced here by the proto's fields).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import protocol_models as pm
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ociforge_runtime import local, tftensor  # noqa: E402
from ociforge_runtime.errors import BadInput  # noqa: E402

from tests.support.peers import peer_python, run_peer  # noqa: E402

cloudpickle.register_pickle_by_value(pm)

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]


@pytest.fixture(scope="module")
def raw_server(module_server):
    return module_server("raw", pm.RawModel, card={"name": "raw"})


def test_raw_hooks_answer_whole_messages(raw_server):
    url = raw_server.url
    msg = {"data": {"ndarray": X}, "meta": {"puid": "p-9"}}
    r = requests.post(url + "/api/v1.0/predictions", json=msg, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["jsonData"] == {"seen": msg, "hook": "predict_raw"}  # the message, untouched
    assert body["meta"]["metrics"][0]["key"] == "raw_gauge"  # kept (wrapper's default)
    assert "ociforge_model_raw_gauge 7" in requests.get(url + "/metrics", timeout=10).text
    # the raw answer's status.code is the HTTP status, as the wrapper answers it
    r = requests.post(url + "/api/v1.0/predictions", json={"jsonData": {"fail": 1}}, timeout=10)
    assert r.status_code == 422 and r.json()["status"]["info"] == "refused by the model"
    # SeldonClient's form field reaches predict_raw the same way, on /predict too
    r = requests.post(url + "/predict", data={"json": json.dumps(msg)}, timeout=10)
    assert r.json()["jsonData"]["seen"] == msg
    r = requests.post(url + "/transform-input", json=msg, timeout=10)
    assert r.json()["jsonData"] == {"hook": "transform_input_raw", "keys": ["data", "meta"]}
    # transform_output_raw raises SeldonNotImplementedError: the ordinary method answers
    r = requests.post(url + "/transform-output", json={"data": {"ndarray": X}}, timeout=10)
    assert r.status_code == 200 and r.json()["data"]["ndarray"] == (np.array(X) * 3).tolist()
    r = requests.post(url + "/route", json=msg, timeout=10)
    assert r.json() == {"data": {"ndarray": [[2]]}, "meta": {"tags": {"hook": "route_raw"}}}
    agg = {"seldonMessages": [msg, msg, msg]}
    assert requests.post(url + "/aggregate", json=agg, timeout=10).json() == {
        "jsonData": {"count": 3}
    }
    fb = {"request": msg, "response": {"jsonData": {}}, "reward": 0.5}
    r = requests.post(url + "/api/v1.0/feedback", json=fb, timeout=10)
    assert r.json() == {"jsonData": {"rewards": [0.5]}}
    r = requests.get(url + "/health/status", timeout=10)
    assert r.json() == {"jsonData": {"healthy": "raw"}}


def test_payload_passthrough(start_server):
    server = start_server(
        pm.PassthroughModel(), env={"PAYLOAD_PASSTHROUGH": "true"}, card={"name": "pt"}
    )
    raw = b'{"data": {"ndarray": [[1, 2]]}}'
    r = requests.post(
        server.url + "/api/v1.0/predictions",
        data=raw,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.content == b'{"got": ' + raw + b', "as": "bytes"}'  # verbatim both ways
    r = requests.post(server.url + "/predict", data={"json": raw.decode()}, timeout=10)
    assert r.json() == {"got": json.loads(raw), "as": "str"}  # the form field's text


def test_get_predict_with_a_json_query(start_server):
    """The wrapper's ``GET /predict?json=`` (and the other GET routes): the message in the
    query string."""
    server = start_server(pm.SeldonModel, card={"name": "getter"})
    msg = json.dumps({"data": {"ndarray": X}})
    r = requests.get(server.url + "/predict", params={"json": msg}, timeout=10)
    assert r.status_code == 200, r.text
    expected = local.test(pm.SeldonModel, X)["prediction"]
    assert r.json()["data"]["ndarray"] == expected
    r = requests.get(server.url + "/transform-input", params={"json": msg}, timeout=10)
    assert r.json()["data"]["ndarray"] == (np.array(X) + 1).tolist()
    r = requests.get(server.url + "/predict", timeout=10)  # no message: the wrapper's 400
    assert r.status_code == 400 and r.json()["status"]["reason"] == "MICROSERVICE_BAD_DATA"


TF_SCRIPT = r"""
import base64, json, sys
import numpy as np
import requests
from google.protobuf import json_format
from seldon_core.proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
a = json.loads(sys.argv[1])

def proto(arr, dtype, typed=None):
    t = tensor_pb2.TensorProto(dtype=dtype)
    for d in arr.shape:
        t.tensor_shape.dim.add(size=d)
    if typed is None:
        t.tensor_content = arr.tobytes()   # what make_tensor_proto writes for > 1 element
    else:
        getattr(t, typed).extend(arr.ravel().tolist())
    return json.loads(json_format.MessageToJson(t))

def read(js):
    t = json_format.ParseDict(js, tensor_pb2.TensorProto())
    np_type = {types_pb2.DT_FLOAT: "<f4", types_pb2.DT_DOUBLE: "<f8", types_pb2.DT_INT64: "<i8",
               types_pb2.DT_INT32: "<i4"}[t.dtype]
    shape = [d.size for d in t.tensor_shape.dim]
    if t.tensor_content:
        values = np.frombuffer(t.tensor_content, np_type)
    else:
        values = np.array(list(t.float_val) or list(t.double_val) or list(t.int64_val)
                          or list(t.int_val), np_type)
    return {"dtype": types_pb2.DataType.Name(t.dtype), "shape": shape,
            "values": values.reshape(shape).tolist()}

out = {}
cases = {
    "f32": proto(np.array(a["x"], "<f4"), types_pb2.DT_FLOAT),
    "i64_typed": proto(np.array([[3, -4, 5]], "<i8"), types_pb2.DT_INT64, "int64_val"),
    "f64_one": proto(np.array([2.5], "<f8"), types_pb2.DT_DOUBLE, "double_val"),
}
for key, tf in cases.items():
    r = requests.post(a["url"] + "/api/v1.0/predictions", json={"data": {"tftensor": tf}})
    body = r.json()
    out[key] = {"status": r.status_code, "sent": tf, "answer": read(body["data"]["tftensor"])}
bad = dict(cases["f32"], tensorContent=base64.b64encode(b"123").decode())
r = requests.post(a["url"] + "/api/v1.0/predictions", json={"data": {"tftensor": bad}})
out["bad"] = {"status": r.status_code, "body": r.json()}
print(json.dumps(out))
"""


def test_tftensor_with_seldon_cores_tensor_proto(start_server):
    server = start_server(pm.TfModel, card={"name": "tf"})
    out = run_peer(peer_python("seldon-core"), TF_SCRIPT, {"url": server.url, "x": X})
    assert "tensorContent" in out["f32"]["sent"] and out["f32"]["status"] == 200
    assert out["f32"]["answer"] == {
        "dtype": "DT_FLOAT",
        "shape": [2, 3],
        "values": (np.array(X, np.float32) * 2).tolist(),
    }
    assert "int64Val" in out["i64_typed"]["sent"]
    assert out["i64_typed"]["answer"] == {
        "dtype": "DT_INT64",
        "shape": [1, 3],
        "values": [[6, -8, 10]],
    }
    assert out["f64_one"]["answer"] == {"dtype": "DT_DOUBLE", "shape": [1], "values": [5.0]}
    assert out["bad"]["status"] == 400
    assert "tensorContent has 3 bytes" in out["bad"]["body"]["status"]["info"]


def test_tftensor_codec_rules():
    """make_ndarray's rules without TensorFlow: fewer values repeat the last, none are zeros;
    strings are base64; what numpy cannot hold is a 400."""
    shape = {"dim": [{"size": "2"}, {"size": "2"}]}
    got = tftensor.decode({"dtype": "DT_INT32", "tensorShape": shape, "intVal": [1, 2]})
    assert got.tolist() == [[1, 2], [2, 2]] and got.dtype == np.int32
    got = tftensor.decode({"dtype": "DT_FLOAT", "tensor_shape": shape})
    assert got.tolist() == [[0.0, 0.0], [0.0, 0.0]] and got.dtype == np.float32
    got = tftensor.decode(
        {"dtype": 1, "tensorShape": {"dim": [{"size": 2}]}, "floatVal": ["NaN", 1]}
    )
    assert np.isnan(got[0]) and got[1] == 1.0
    text = {"dtype": "DT_STRING", "tensorShape": {"dim": [{"size": "1"}]}, "stringVal": ["aGk="]}
    assert tftensor.decode(text).tolist() == [b"hi"]
    half = tftensor.encode(np.array([1.5], np.float16))
    assert half == {"dtype": "DT_HALF", "tensorShape": {"dim": [{"size": "1"}]}, "halfVal": [15872]}
    assert tftensor.decode(half).tolist() == [1.5]
    assert tftensor.encode(np.array(3.0)) == {
        "dtype": "DT_DOUBLE",
        "tensorShape": {},
        "doubleVal": [3.0],
    }
    for bad in (
        {"dtype": "DT_BFLOAT16"},
        {"dtype": "DT_FLOAT", "tensorShape": {"unknownRank": True}},
        {"dtype": "DT_INT32", "tensorShape": {"dim": [{"size": "1"}]}, "intVal": [1, 2]},
        {"dtype": "DT_FLOAT", "tensorContent": "%%%"},
    ):
        with pytest.raises(BadInput):
            tftensor.decode(bad)
