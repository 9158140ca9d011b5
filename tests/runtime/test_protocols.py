"""The protocol details the clients' tests do not reach: binary tensor framing and its errors,
SeldonMessage forms and errors, PREDICTIVE_UNIT_PARAMETERS, KServe v1 edge cases (in-process
Flask app, plus a real server where start-up matters)."""

from __future__ import annotations

import json
import struct

import cloudpickle
import numpy as np
import protocol_models as pm
import pytest
from ociforge_runtime import seldon
from ociforge_runtime.binary import HEADER

from tests.runtime.conftest import app_for

cloudpickle.register_pickle_by_value(pm)


def flags(x):
    """Reports how a binary input arrived: dtype, shape, whether numpy copied it."""
    return {
        "dtype": str(x.dtype),
        "shape": list(x.shape),
        "writeable": bool(x.flags.writeable),
        "owndata": bool(x.flags.owndata),
        "first": x.ravel()[0].item() if x.size and x.dtype.kind != "O" else None,
    }


def binary_body(inputs, *, extra=b"", outputs=None, params=None):
    """A binary-extension request: the JSON header, then each input's bytes."""
    specs, blobs = [], []
    for name, datatype, shape, raw in inputs:
        specs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        blobs.append(raw)
    head = {"inputs": specs}
    if outputs is not None:
        head["outputs"] = outputs
    if params is not None:
        head["parameters"] = params
    header = json.dumps(head).encode()
    return header + b"".join(blobs) + extra, {HEADER: str(len(header))}


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in items)


@pytest.fixture(scope="module")
def tensor_client():
    app, predictor = app_for(pm.tensor_model, card={"name": "tensor"})
    yield app.test_client()
    predictor.stop()


def test_binary_input_is_a_view_of_the_body_not_a_copy():
    app, predictor = app_for(flags, card={"name": "flags"})
    client = app.test_client()
    x = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    body, headers = binary_body([("x", "FP32", [3, 4], x.tobytes())])
    r = client.post("/v2/models/flags/infer", data=body, headers=headers)
    assert r.status_code == 200, r.get_data()
    got = {o["name"]: o["data"] for o in r.json["outputs"]}
    assert got["dtype"] == ["float32"] and got["shape"] == [3, 4]
    assert got["writeable"] == [False] and got["owndata"] == [False]  # np.frombuffer on the body
    assert got["first"] == [0.5]
    predictor.stop()


def test_binary_datatypes_and_binary_outputs(tensor_client):
    a = np.array([[1, -2], [3, 4]], dtype=np.int32)
    b = np.array([True, False, True])
    s = bytes_elements(b"ab", b"", b"x\x00y")
    body, headers = binary_body(
        [
            ("a", "INT32", [2, 2], a.tobytes()),
            ("b", "BOOL", [3], b.tobytes()),
            ("s", "BYTES", [3], s),
        ],
        outputs=[
            {"name": "a_out", "parameters": {"binary_data": True}},
            {"name": "b_out"},
            {"name": "s_out", "parameters": {"binary_data": True}},
        ],
    )
    assert len(b.tobytes()) == 3  # BOOL: one byte each
    r = tensor_client.post("/v2/models/tensor/infer", data=body, headers=headers)
    assert r.status_code == 200, r.get_data()
    assert r.mimetype == "application/octet-stream"
    raw = r.get_data()
    n = int(r.headers[HEADER])
    head = json.loads(raw[:n])
    outs = {o["name"]: o for o in head["outputs"]}
    assert outs["b_out"]["data"] == [False, True, False]  # asked for as JSON
    size_a = outs["a_out"]["parameters"]["binary_data_size"]
    assert "data" not in outs["a_out"] and size_a == 16
    blob = raw[n:]
    assert np.frombuffer(blob[:size_a], "<i4").tolist() == (a * 2).ravel().tolist()
    assert blob[size_a:] == bytes_elements(b"AB", b"", b"X\x00Y")


def test_binary_output_for_all_with_binary_data_output(tensor_client):
    x = np.array([1.5, 2.0], dtype="<f8")
    body, headers = binary_body(
        [("x", "FP64", [2], x.tobytes())], params={"binary_data_output": True}
    )
    r = tensor_client.post("/v2/models/tensor/infer", data=body, headers=headers)
    n = int(r.headers[HEADER])
    assert np.frombuffer(r.get_data()[n:], "<f8").tolist() == [3.0, 4.0]


@pytest.mark.parametrize(
    ("inputs", "extra", "header", "needle"),
    [
        ([("x", "FP32", [3], b"\x00" * 8)], b"", None, "needs 12 bytes"),
        ([("x", "FP32", [2], b"\x00" * 8)], b"junk", None, "bytes after the binary inputs"),
        ([("x", "INT64", [1], b"\x00" * 8)], b"", "99999", "body has only"),
        ([("x", "INT64", [1], b"\x00" * 8)], b"", "ten", "non-negative integer"),
        ([("s", "BYTES", [2], bytes_elements(b"a"))], b"", None, "needs 2 BYTES elements"),
        ([("s", "BYTES", [1], b"\x09\x00\x00\x00ab")], b"", None, "runs past"),
        ([("x", "FP8", [1], b"\x00")], b"", None, "unknown datatype"),
    ],
)
def test_bad_binary_requests_are_400_and_serving_goes_on(
    tensor_client, inputs, extra, header, needle
):
    body, headers = binary_body(inputs, extra=extra)
    if header is not None:
        headers[HEADER] = header
    r = tensor_client.post("/v2/models/tensor/infer", data=body, headers=headers)
    assert r.status_code == 400 and needle in r.json["error"], r.json
    ok, headers = binary_body([("x", "FP32", [1], np.float32(2).tobytes())])
    r = tensor_client.post("/v2/models/tensor/infer", data=ok, headers=headers)
    assert r.status_code == 200


def test_binary_size_past_the_body_is_400(tensor_client):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    r = tensor_client.post(
        "/v2/models/tensor/infer", data=header + b"\x00" * 4, headers={HEADER: str(len(header))}
    )
    assert r.status_code == 400 and "runs past the end of the body" in r.json["error"]


# ------------------------------------------------------------------ Seldon


def test_seldon_forms_and_errors(monkeypatch):
    monkeypatch.setenv(
        "PREDICTIVE_UNIT_PARAMETERS", '[{"name": "scale", "value": "3", "type": "INT"}]'
    )
    app, predictor = app_for(pm.SeldonModel, card={"name": "s"})
    c = app.test_client()
    r = c.post("/api/v1.0/predictions", json={"data": {"names": ["p", "q"], "ndarray": [1, 2]}})
    assert r.json["data"] == {"ndarray": [3.0, 6.0], "names": []}  # 1-D: no class names
    r = c.post("/predict", json={"data": {"ndarray": [[1, 2, 3]]}, "meta": {"tags": {"t": 1}}})
    assert r.json["data"]["names"] == ["a", "b", "c"]
    assert r.json["meta"]["tags"] == {"t": 1, "model": "seldon", "label": "plain"}
    # multipart the wrapper's way: binData as a file, strData as text
    r = c.post("/predict", data={"strData": "abc"}, content_type="multipart/form-data")
    assert r.json["strData"] == "ABC:plain"
    import io

    r = c.post(
        "/api/v1.0/predictions",
        data={"binData": (io.BytesIO(b"xyz"), "b.bin")},
        content_type="multipart/form-data",
    )
    assert r.json["binData"] == "enl4"  # base64 of b"zyx"
    # a JSON object that is not a SeldonMessage stays on the plain route
    r = c.post("/predict", json={"data": [1, 2], "other": 1})
    assert "prediction" in r.json
    for body in ({"data": "x"}, {"binData": "%%%"}, {"strData": 1}, [1], {"data": {"tensor": {}}}):
        r = c.post("/api/v1.0/predictions", json=body)
        assert r.status_code == 400, body
        assert r.json["status"]["reason"] == "MICROSERVICE_BAD_DATA" and r.json["status"]["info"]
    r = c.post("/api/v1.0/predictions", data=b"{nope", content_type="application/json")
    assert r.status_code == 400 and "malformed JSON" in r.json["status"]["info"]
    r = c.post("/aggregate", json={"seldonMessages": []})
    assert r.status_code == 400
    predictor.stop()


def test_seldon_model_error_and_missing_method():
    class Broken:
        def predict(self, X, names):
            raise RuntimeError("secret detail")

    app, predictor = app_for(Broken(), card={"name": "b"})
    c = app.test_client()
    r = c.post("/api/v1.0/predictions", json={"data": {"ndarray": [1]}})
    assert r.status_code == 500
    status = r.json["status"]
    assert status["reason"] == "MICROSERVICE_INTERNAL_ERROR"
    assert "secret" not in status["info"] and r.json["request_id"] == r.headers["X-Request-Id"]
    r = c.post("/route", json={"data": {"ndarray": [1]}})
    assert r.status_code == 404 and "route()" in r.json["status"]["info"]
    r = c.post("/transform-input", json={"data": {"ndarray": [[1, 2]]}})
    assert r.json["data"]["ndarray"] == [[1, 2]]  # passed through, as the wrapper does
    r = c.post("/send-feedback", json={"request": {"data": {"ndarray": [1]}}, "reward": 1})
    assert r.status_code == 200
    predictor.stop()


def test_predictive_unit_parameters():
    text = json.dumps(
        [
            {"name": "i", "value": "7", "type": "INT"},
            {"name": "f", "value": "0.5", "type": "FLOAT"},
            {"name": "d", "value": "1e3", "type": "DOUBLE"},
            {"name": "s", "value": "hi", "type": "STRING"},
            {"name": "b", "value": "false", "type": "BOOL"},
            {"name": "t", "value": "True", "type": "BOOL"},
        ]
    )
    assert seldon.parse_parameters(text) == {
        "i": 7,
        "f": 0.5,
        "d": 1000.0,
        "s": "hi",
        "b": False,
        "t": True,
    }
    assert seldon.parse_parameters("") == {}
    for bad in ('[{"name": "i", "value": "x", "type": "INT"}]', "{}", "nope",
                '[{"name": "i", "value": "1", "type": "LONG"}]'):  # fmt: skip
        with pytest.raises(ValueError):
            seldon.parse_parameters(bad)


def test_bad_parameters_stop_the_container(start_server):
    env = {"PREDICTIVE_UNIT_PARAMETERS": '[{"name": "scale", "value": "x", "type": "FLOAT"}]'}
    server = start_server(pm.SeldonModel, env=env, wait=False)
    assert server.proc.wait(30) != 0
    assert "PREDICTIVE_UNIT_PARAMETERS: parameter 'scale'" in server.logs()


# ------------------------------------------------------------------ KServe v1


def test_kserve_v1_function_model_and_errors():
    app, predictor = app_for(pm.tensor_model, card={"name": "fn"})
    c = app.test_client()
    r = c.post("/v1/models/fn:predict", json={"instances": [1, 2.5]})
    assert r.json == {"predictions": [2, 5.0]}
    assert c.get("/v1/models").json == {"models": ["fn"]}
    r = c.post("/v1/models/fn:predict", data=b"{", content_type="application/json")
    assert r.status_code == 400 and "error" in r.json
    r = c.post("/v1/models/fn:predict", json=[1])
    assert r.status_code == 400
    predictor.stop()
