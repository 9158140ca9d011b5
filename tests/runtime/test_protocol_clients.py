"""Every client the serving world already has works unchanged, each from its own venv.

The clients (``tritonclient.http``, ``kserve``'s REST client, ``seldon-core``'s ``SeldonClient``)
run as subprocess scripts in virtual environments of their own (``tests/support/peers.py``)
against a real ``python -m ociforge_runtime`` on 127.0.0.1; every answer is compared with the
local prediction (``ociforge_runtime.local``). Bad input on each protocol answers that
protocol's own error form and serving goes on.
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

from ociforge_runtime import local  # noqa: E402

from tests.support.peers import peer_python, run_peer  # noqa: E402

cloudpickle.register_pickle_by_value(pm)

PARAMS = [
    {"name": "scale", "value": "2.5", "type": "FLOAT"},
    {"name": "offset", "value": "1", "type": "INT"},
    {"name": "label", "value": "tuned", "type": "STRING"},
    {"name": "verbose", "value": "true", "type": "BOOL"},
]
X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]


@pytest.fixture(scope="module")
def seldon_server(module_server):
    env = {"PREDICTIVE_UNIT_PARAMETERS": json.dumps(PARAMS)}
    return module_server("seldon", pm.SeldonModel, env=env, card={"name": "seldon-model"})


@pytest.fixture
def seldon_local(monkeypatch):
    """The local prediction of the Seldon model, configured as the server is."""
    monkeypatch.setenv("PREDICTIVE_UNIT_PARAMETERS", json.dumps(PARAMS))

    def predict(sample):
        return local.test(pm.SeldonModel, sample)["prediction"]

    return predict


# ------------------------------------------------------------------ Seldon

SELDON_SCRIPT = r"""
import json, sys
import numpy as np
from seldon_core.seldon_client import SeldonClient
from seldon_core.utils import seldon_message_to_json
a = json.loads(sys.argv[1])
sc = SeldonClient(microservice_endpoint=a["endpoint"])
out = {}
def call(key, **kw):
    r = sc.microservice(transport="rest", **kw)
    out[key] = {"success": r.success, "msg": r.msg,
                "response": seldon_message_to_json(r.response) if r.response is not None else None}
x = np.array(a["x"])
call("ndarray", method="predict", data=x, payload_type="ndarray", names=["f0", "f1", "f2"])
call("tensor", method="predict", data=x, payload_type="tensor")
call("str", method="predict", str_data="hello")
call("bin", method="predict", bin_data=b"\x00\x01abc")
call("json", method="predict", json_data={"k": 1, "z": [1, 2]})
call("transform_input", method="transform-input", data=x, payload_type="ndarray")
call("transform_output", method="transform-output", data=x, payload_type="ndarray")
call("route", method="route", data=x, payload_type="ndarray")
r = sc.microservice(transport="rest", method="aggregate", datas=[x, x], payload_type="ndarray")
out["aggregate"] = {"success": r.success, "response": seldon_message_to_json(r.response)}
p = sc.microservice(transport="rest", method="predict", data=x, payload_type="ndarray")
f = sc.microservice_feedback(prediction_request=p.request, prediction_response=p.response,
                             reward=0.75, transport="rest")
out["feedback"] = {"success": f.success, "msg": f.msg}
print(json.dumps(out))
"""


def test_seldon_client(seldon_server, seldon_local):
    endpoint = seldon_server.url.removeprefix("http://")
    out = run_peer(peer_python("seldon-core"), SELDON_SCRIPT, {"endpoint": endpoint, "x": X})
    expected = seldon_local(X)  # scale 2.5, offset 1 from PREDICTIVE_UNIT_PARAMETERS
    assert expected == [[3.5, 6.0, 8.5], [11.0, 13.5, 17.25]]

    nd = out["ndarray"]
    assert nd["success"], nd
    assert nd["response"]["data"]["ndarray"] == expected
    assert nd["response"]["data"]["names"] == ["a", "b", "c"]  # the model's class_names()
    meta = nd["response"]["meta"]
    assert meta["tags"] == {"model": "seldon", "label": "tuned"}
    # (the client's protobuf leaves out COUNTER, its enum's default)
    assert [(m["key"], m["value"]) for m in meta["metrics"]] == [("seldon_calls", 1.0)]

    tensor = out["tensor"]["response"]["data"]["tensor"]
    assert np.array(tensor["values"]).reshape(tensor["shape"]).tolist() == expected
    assert out["str"]["response"]["strData"] == local.test(pm.SeldonModel, "hello")["prediction"]
    import base64

    assert base64.b64decode(out["bin"]["response"]["binData"]) == b"cba\x01\x00"
    assert out["json"]["response"]["jsonData"]["keys"] == ["k", "z"]
    assert out["json"]["response"]["jsonData"]["label"] == "tuned"
    assert out["json"]["response"]["jsonData"]["loads"] == 1  # load() once in the worker
    assert out["transform_input"]["response"]["data"]["ndarray"] == (np.array(X) + 1).tolist()
    assert out["transform_output"]["response"]["data"]["ndarray"] == (np.array(X) * 10).tolist()
    assert out["route"]["response"]["data"]["ndarray"] == [[1.0]]
    assert out["aggregate"]["response"]["data"]["ndarray"] == (np.array(X) * 2).tolist()
    assert out["feedback"]["success"], out["feedback"]


def test_seldon_routes_over_http(seldon_server, seldon_local):
    url = seldon_server.url
    expected = seldon_local(X)
    # Seldon Core's own traffic: /api/v1.0/predictions, with no setting
    r = requests.post(url + "/api/v1.0/predictions", json={"data": {"ndarray": X}}, timeout=10)
    assert r.status_code == 200 and r.json()["data"]["ndarray"] == expected
    # tensor in -> tensor out; puid and request tags carried over
    body = {"data": {"tensor": {"shape": [2, 3], "values": sum(X, [])}}, "meta": {"puid": "p-1"}}
    r = requests.post(url + "/predict", json=body, timeout=10)
    assert r.json()["data"]["tensor"] == {"shape": [2, 3], "values": sum(expected, [])}
    assert r.json()["meta"]["puid"] == "p-1"
    # the plain ociforge route still answers plain JSON that is not a SeldonMessage
    r = requests.post(url + "/predict", json=X, timeout=10)
    assert r.json()["prediction"] == expected
    # health and metadata
    assert requests.get(url + "/health/ping", timeout=10).text == "pong"
    assert requests.get(url + "/health/status", timeout=10).json()["strData"] == "healthy"
    meta = requests.get(url + "/metadata", timeout=10).json()
    assert meta["versions"] == ["v7"] and meta["platform"] == "ociforge-test"
    # bad input: the wrapper's error form, 400, and serving goes on
    r = requests.post(
        url + "/api/v1.0/predictions",
        json={"data": {"tensor": {"shape": [5], "values": [1, 2]}}},
        timeout=10,
    )
    assert r.status_code == 400
    status = r.json()["status"]
    assert status["reason"] == "MICROSERVICE_BAD_DATA" and status["code"] == -1
    assert "reshape" in status["info"]
    r = requests.post(url + "/api/v1.0/predictions", json={"nothing": 1}, timeout=10)
    assert r.status_code == 400 and r.json()["status"]["status"] == 1
    r = requests.post(url + "/api/v1.0/predictions", json={"data": {"ndarray": X}}, timeout=10)
    assert r.status_code == 200
    # model metrics are exported too
    assert "ociforge_model_seldon_calls" in requests.get(url + "/metrics", timeout=10).text


def test_instance_load_failure_stops_the_container(start_server):
    server = start_server(pm.FailingLoad(), wait=False)
    code = server.proc.wait(30)
    assert code != 0
    assert "weights not found at /nowhere" in server.logs()
    assert any(
        rec.get("event") == "model_load_failed" and "weights not found" in rec.get("error", "")
        for rec in server.log_records()
    )


# ------------------------------------------------------------------ KServe v1 and v2

KSERVE_SCRIPT = r"""
import asyncio, json, sys
import httpx
import numpy as np
from kserve import InferenceRESTClient, RESTConfig, InferRequest, InferInput
a = json.loads(sys.argv[1])

async def v1(out):
    c = InferenceRESTClient(RESTConfig(protocol="v1", retries=1))
    out["v1_ready"] = await c.is_model_ready(a["base"], a["model"])
    out["v1"] = await c.infer(a["base"], {"instances": a["instances"]}, model_name=a["model"])
    out["v1_inputs"] = await c.infer(a["base"], {"inputs": a["instances"]}, model_name=a["model"])
    for key, body, model in (("v1_bad", {"instances": 5}, a["model"]),
                             ("v1_missing", {"instances": [[1]]}, "nope")):
        try:
            await c.infer(a["base"], body, model_name=model)
            out[key] = None
        except httpx.HTTPStatusError as exc:
            out[key] = [exc.response.status_code, exc.response.json(), str(exc)]
    out["v1_after"] = await c.infer(a["base"], {"instances": a["instances"]}, model_name=a["model"])
    await c.close()

async def v2(out):
    c = InferenceRESTClient(RESTConfig(protocol="v2", retries=1))
    out["v2_ready"] = await c.is_model_ready(a["base"], a["model"])
    x = np.array(a["x"], dtype=np.float32)
    for key, binary in (("v2_binary", True), ("v2_json", False)):
        inp = InferInput(name="x", shape=list(x.shape), datatype="FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        req = InferRequest(model_name=a["model"], infer_inputs=[inp], request_id="k-" + key)
        res = await c.infer(a["base"], req, model_name=a["model"])
        out[key] = {"id": res.id, "name": res.outputs[0].name,
                    "data": res.outputs[0].as_numpy().tolist()}
    await c.close()

async def main():
    out = {}
    await (v1(out) if a["protocol"] == "v1" else v2(out))
    print(json.dumps(out))

asyncio.run(main())
"""


def test_kserve_client_v1_and_v2(module_server):
    v1 = module_server("sklike", pm.SkLike(), card={"name": "sklike"})
    v2 = module_server("tensor", pm.tensor_model, card={"name": "tensor"})
    instances = [[1.0, 2.0], [3.0, 4.5]]
    x = [[1.5, -2.0, 3.0, 4.0]]
    args = {"protocol": "v1", "base": v1.url, "model": "sklike", "instances": instances}
    out = run_peer(peer_python("kserve"), KSERVE_SCRIPT, args)
    expected_v1 = local.test(pm.SkLike(), instances)["prediction"]
    assert out["v1_ready"] is True
    assert out["v1"] == {"predictions": expected_v1} == out["v1_inputs"] == out["v1_after"]
    status, body, _ = out["v1_bad"]
    assert status == 400 and body == {"error": 'Expected "instances" to be a list'}
    status, body, _ = out["v1_missing"]
    assert status == 404 and body == {"error": "Model with name nope does not exist."}

    args = {"protocol": "v2", "base": v2.url, "model": "tensor", "x": x}
    out = run_peer(peer_python("kserve"), KSERVE_SCRIPT, args)
    expected_v2 = local.test(pm.tensor_model, x)["prediction"]
    assert out["v2_ready"] is True
    for key in ("v2_binary", "v2_json"):
        assert out[key]["data"] == expected_v2
        assert out[key]["id"] == f"k-{key}" and out[key]["name"] == "output-0"


# ------------------------------------------------------------------ Triton HTTP client

TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
a = json.loads(sys.argv[1])
c = httpclient.InferenceServerClient(a["url"])
out = {"live": c.is_server_live(), "ready": c.is_model_ready(a["model"]),
       "meta": c.get_server_metadata()}
x = np.array(a["x"], dtype=np.float32)

def one(binary_in, binary_out):
    i = httpclient.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary_in)
    outputs = None if binary_out is None else [
        httpclient.InferRequestedOutput("output-0", binary_data=binary_out)]
    r = c.infer(a["model"], [i], outputs=outputs, request_id="t-1")
    arr = r.as_numpy("output-0")
    return {"data": arr.tolist(), "dtype": str(arr.dtype),
            "binary": "data" not in r.get_response()["outputs"][0]}

out["default"] = one(True, None)       # the client's default: binary both ways
out["binary_in_json_out"] = one(True, False)
out["json"] = one(False, False)
out["json_in_binary_out"] = one(False, True)

ins = []
arrays = {"a": np.array([[1, -2, 3], [4, 5, -6]], dtype=np.int64),
          "b": np.array([True, False, True]),
          "s": np.array([b"ab", b"c\x00d", b""], dtype=np.object_),
          "h": np.array([0.5, -1.25], dtype=np.float16),
          "u": np.array([1, 250], dtype=np.uint8)}
types = {"a": "INT64", "b": "BOOL", "s": "BYTES", "h": "FP16", "u": "UINT8"}
for name, arr in arrays.items():
    i = httpclient.InferInput(name, list(arr.shape), types[name])
    i.set_data_from_numpy(arr)
    ins.append(i)
r = c.infer(a["model"], ins)
out["mixed"] = {}
for name in arrays:
    v = r.as_numpy(name + "_out")
    out["mixed"][name] = [str(v.dtype), [e.decode("latin-1") if isinstance(e, bytes) else e
                                         for e in v.ravel().tolist()]]

# bad input: the declared shape does not match the binary data
i = httpclient.InferInput("x", list(x.shape), "FP32")
i.set_data_from_numpy(x)
i.set_shape([x.shape[0], x.shape[1] + 1])
try:
    c.infer(a["model"], [i])
    out["bad"] = None
except InferenceServerException as exc:
    out["bad"] = [exc.status(), exc.message()]
out["after_bad"] = one(True, None)
print(json.dumps(out))
"""


def test_tritonclient_http_binary_and_json(module_server):
    server = module_server("tensor", pm.tensor_model, card={"name": "tensor"})
    x = [[1.5, -2.0, 3.25, 4.0], [0.0, 1.0, 2.0, 3.0]]
    args = {"url": server.url.removeprefix("http://"), "model": "tensor", "x": x}
    out = run_peer(peer_python("tritonclient"), TRITON_SCRIPT, args)
    assert out["live"] and out["ready"]
    assert "binary_tensor_data" in out["meta"]["extensions"]
    expected = local.test(pm.tensor_model, x)["prediction"]
    for key, binary in (
        ("default", True),
        ("binary_in_json_out", False),
        ("json", False),
        ("json_in_binary_out", True),
    ):
        assert out[key]["data"] == expected, key
        assert out[key]["dtype"] == "float32" and out[key]["binary"] is binary, key
    local_mixed = local.test(
        pm.tensor_model,
        {
            "a": [[1, -2, 3], [4, 5, -6]],
            "b": [True, False, True],
            "s": ["ab", "c\x00d", ""],
            "h": [0.5, -1.25],
            "u": [1, 250],
        },
    )["prediction"]
    mixed = out["mixed"]
    assert mixed["a"] == ["int64", sum(local_mixed["a_out"], [])]
    assert mixed["b"] == ["bool", local_mixed["b_out"]]
    assert mixed["s"] == ["object", local_mixed["s_out"]]
    assert mixed["h"] == ["float16", local_mixed["h_out"]]
    assert mixed["u"][0] == "uint8" and mixed["u"][1] == [2, 244]  # uint8 wraps: 250 * 2
    status, message = out["bad"]
    assert str(status) == "400" and "binary_data_size" in message
    assert out["after_bad"]["data"] == expected
