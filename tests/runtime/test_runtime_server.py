"""Every route of a real server process, over HTTP on loopback.

The server is started as the image starts it (``python -m ociforge_runtime``).
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import requests
import runtime_models as models

TYPED_CARD = {
    "name": "typed",
    "version": "3",
    "description": "doubles a batch of 3-vectors",
    "authors": ["ociforge tests"],
    "license": "Apache-2.0",
    "resources": {"cpu": 1, "memory": "256Mi"},
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}


@pytest.fixture(scope="module")
def echo(module_server):
    return module_server("echo", models.echo, card={"name": "echo"}, build={"commit": "abc123"})


@pytest.fixture(scope="module")
def typed(module_server):
    return module_server("typed", models.echo, card=TYPED_CARD)


# ---------------------------------------------------------------- Open Inference Protocol


def test_health_and_server_metadata(echo):
    assert requests.get(echo.url + "/v2/health/live").json() == {"live": True}
    ready = requests.get(echo.url + "/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    model_ready = requests.get(echo.url + "/v2/models/echo/ready")
    assert model_ready.status_code == 200 and model_ready.json()["ready"] is True
    assert requests.get(echo.url + "/v2/models/echo/versions/1/ready").status_code == 200
    meta = requests.get(echo.url + "/v2").json()
    assert meta["name"] == "ociforge" and meta["version"]


def test_model_metadata_has_tensors(typed):
    meta = requests.get(typed.url + "/v2/models/typed").json()
    assert meta["name"] == "typed"
    assert meta["versions"] == ["3"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert requests.get(typed.url + "/v2/models/typed/versions/3").status_code == 200


def test_unknown_model_and_version_are_404(typed):
    r = requests.get(typed.url + "/v2/models/other")
    assert r.status_code == 404 and "'other' not found" in r.json()["error"]
    r = requests.post(typed.url + "/v2/models/typed/versions/9/infer", json={})
    assert r.status_code == 404 and "no version '9'" in r.json()["error"]


def test_infer_fp32_tensor(typed):
    body = {
        "id": "req-1",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6.5]}
        ],
    }
    r = requests.post(typed.url + "/v2/models/typed/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "typed" and out["model_version"] == "3" and out["id"] == "req-1"
    assert out["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2, 3], "data": [2, 4, 6, 8, 10, 13]}
    ]


def test_infer_nested_data_and_requested_outputs(typed):
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [[1, 2, 3]]}],
        "outputs": [{"name": "y"}],
    }
    r = requests.post(typed.url + "/v2/models/typed/versions/3/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2, 4, 6]
    body["outputs"] = [{"name": "nope"}]
    r = requests.post(typed.url + "/v2/models/typed/infer", json=body)
    assert r.status_code == 400 and "'nope' is not produced" in r.json()["error"]


def test_infer_bytes_and_int_tensors(echo):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["ab", "cd"]}]}
    r = requests.post(echo.url + "/v2/models/echo/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [
        {"name": "output-0", "datatype": "BYTES", "shape": [2], "data": ["AB", "CD"]}
    ]
    body = {"inputs": [{"name": "n", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    out = requests.post(echo.url + "/v2/models/echo/infer", json=body).json()["outputs"][0]
    assert out["datatype"] == "INT32" and out["shape"] == [2, 2] and out["data"] == [2, 4, 6, 8]


def test_infer_several_inputs_reach_model_as_dict(echo):
    body = {
        "inputs": [
            {"name": "a", "datatype": "INT64", "shape": [1], "data": [7]},
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ]
    }
    r = requests.post(echo.url + "/v2/models/echo/infer", json=body)
    assert r.status_code == 200, r.text
    tensors = {t["name"]: t for t in r.json()["outputs"]}
    assert tensors["type"]["data"] == ["dict"]
    assert tensors["keys"]["data"] == ["a", "b"]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (
            {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3]},
            "shape [2, 3] needs 6 elements, got 3",
        ),
        (
            {"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]},
            "expected datatype FP32, got FP64",
        ),
        (
            {"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]},
            "expected shape [-1, 3], got [3]",
        ),
        ({"name": "x", "datatype": "FP32", "shape": [1, 3], "data": ["a", "b", "c"]}, "FP32 needs"),
        (
            {"name": "x", "datatype": "FLOAT", "shape": [1, 3], "data": [1, 2, 3]},
            "unknown datatype 'FLOAT'",
        ),
        ({"name": "x", "datatype": "FP32", "data": [1, 2, 3]}, "missing field 'shape'"),
        (
            {"name": "z", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
            "missing input 'x'",
        ),
    ],
)
def test_infer_bad_tensors_are_400_with_reason(typed, tensor, message):
    r = requests.post(typed.url + "/v2/models/typed/infer", json={"inputs": [tensor]})
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_infer_bad_bodies_are_400(typed):
    url = typed.url + "/v2/models/typed/infer"
    r = requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("malformed JSON")
    r = requests.post(url, json={"id": "x"})
    assert r.status_code == 400 and "missing field 'inputs'" in r.json()["error"]
    r = requests.post(
        url, json={"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [999]}]}
    )
    assert r.status_code == 400


# ---------------------------------------------------------------- simple route


def test_predict_json(echo):
    r = requests.post(echo.url + "/predict", json={"a": 1, "b": [1, 2]})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {
        "prediction": {"type": "dict", "keys": ["a", "b"], "value": {"a": 1, "b": [1, 2]}}
    }


def test_predict_raw_bytes_and_text(echo):
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    r = requests.post(echo.url + "/predict", data=png, headers={"Content-Type": "image/png"})
    assert r.json()["prediction"] == {"type": "bytes", "len": 108, "head": png[:8].hex()}
    r = requests.post(
        echo.url + "/predict",
        data="héllo".encode(),
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert r.json()["prediction"] == {"type": "str", "value": "héllo"}
    r = requests.post(
        echo.url + "/predict", data=b"\xff\xfe", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 400 and "not valid utf-8" in r.json()["error"]


def test_predict_multipart_single_and_several_files(echo):
    r = requests.post(
        echo.url + "/predict",
        files={"image": ("a.bin", b"\x00\x01\x02", "application/octet-stream")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == {"type": "bytes", "len": 3, "head": "000102"}
    r = requests.post(
        echo.url + "/predict",
        files=[("image", ("a.bin", b"abcd")), ("mask", ("m.bin", b"xy"))],
        data={"note": "hi"},
    )
    assert r.json()["prediction"]["value"] == {
        "image": {"bytes": 4},
        "mask": {"bytes": 2},
        "note": "hi",
    }


def test_predict_batch_json_and_multipart(echo):
    r = requests.post(echo.url + "/predict/batch", json=["x", {"k": 1}, 5])
    assert r.status_code == 200
    assert r.json()["predictions"] == [
        {"type": "str", "value": "x"},
        {"type": "dict", "keys": ["k"], "value": {"k": 1}},
        {"type": "int", "value": 5},
    ]
    r = requests.post(echo.url + "/predict/batch", files=[("f", ("1", b"a")), ("f", ("2", b"bcd"))])
    assert [p["len"] for p in r.json()["predictions"]] == [1, 3]


def test_predict_bad_inputs_are_400(echo):
    url = echo.url + "/predict"
    r = requests.post(url, data=b'{"a": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    r = requests.post(url, data=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "empty request body" in r.json()["error"]
    r = requests.post(url + "/batch", json={"not": "a list"})
    assert r.status_code == 400 and "must be a JSON list" in r.json()["error"]
    r = requests.post(
        url + "/batch", data=b"raw", headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 400 and "takes a JSON list" in r.json()["error"]


def test_model_exception_is_500_generic_message_request_id_details_in_log_only(echo):
    r = requests.post(echo.url + "/predict", data="boom", headers={"Content-Type": "text/plain"})
    assert r.status_code == 500
    body = r.json()
    assert body == {"error": "the model raised an error", "request_id": body["request_id"]}
    assert re.fullmatch(r"[0-9a-f]{16}", body["request_id"])
    assert r.headers["X-Request-Id"] == body["request_id"]
    assert "exploded" not in r.text and "ValueError" not in r.text and "Traceback" not in r.text
    errors = [rec for rec in echo.log_records() if rec.get("event") == "model_error"]
    [mine] = [rec for rec in errors if rec.get("request_id") == body["request_id"]]
    assert mine["error"] == "model raised ValueError: the model exploded on purpose"
    assert "Traceback (most recent call last)" in mine["traceback"]
    assert "runtime_models.py" in mine["traceback"] or "in echo" in mine["traceback"]
    # and the server keeps serving
    assert requests.post(echo.url + "/predict", json=[1]).status_code == 200


def test_request_too_large_is_413(module_server):
    server = module_server("small", models.echo, env={"OCIFORGE_MAX_REQUEST_BYTES": "1024"})
    r = requests.post(
        server.url + "/predict",
        data=b"x" * 2048,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 413
    assert "larger than 1024 bytes" in r.json()["error"]
    r = requests.post(server.url + "/predict", files={"f": ("f", b"y" * 4096)})
    assert r.status_code == 413
    assert requests.post(server.url + "/predict", data=b"x" * 1000).status_code == 200


def test_unknown_route_and_wrong_method_answer_json(echo):
    r = requests.get(echo.url + "/nope")
    assert r.status_code == 404 and "error" in r.json()
    r = requests.get(echo.url + "/predict/batch")  # (GET /predict is the Seldon wrapper's)
    assert r.status_code == 405 and "error" in r.json()
    # neither matched a route: logged and counted as <unmatched>, a matched route by its template
    requests.get(echo.url + "/v2/models/echo/ready")
    lines = [rec for rec in echo.log_records() if rec.get("event") == "request"]
    by_path = {(rec["method"], rec["path"]): rec for rec in lines}
    assert by_path[("GET", "/nope")]["route"] == "<unmatched>"
    assert by_path[("GET", "/nope")]["status"] == 404
    assert by_path[("GET", "/predict/batch")]["route"] == "<unmatched>"
    assert by_path[("GET", "/predict/batch")]["status"] == 405
    assert by_path[("GET", "/v2/models/echo/ready")]["route"] == "/v2/models/<name>/ready"
    text = requests.get(echo.url + "/metrics").text
    assert 'ociforge_requests_total{method="GET",route="<unmatched>",status="404"}' in text


# ---------------------------------------------------------------- lifecycle


def test_run_status_and_disabled_shutdown(echo):
    r = requests.post(echo.url + "/run", json={"a": 1})
    assert r.status_code == 200 and r.json()["success"] is True
    assert r.json()["outputs"][0]["keys"] == ["a"]
    r = requests.post(echo.url + "/run", data="boom", headers={"Content-Type": "text/plain"})
    assert r.status_code == 500 and r.json()["success"] is False
    assert r.json()["error"] == "the model raised an error" and r.json()["request_id"]
    status = requests.get(echo.url + "/status").json()
    assert status["status"] == "ready" and status["name"] == "echo" and status["version"] == "1"
    assert status["kind"] == "function" and status["build"] == {"commit": "abc123"}
    assert (
        status["ociforge_version"]
        and status["python"]["package"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    )
    for key in ("description", "authors", "inputs", "outputs", "resources", "license"):
        assert key in status
    assert "pid" not in status["server"] and "uid" not in status["server"]
    r = requests.post(echo.url + "/shutdown")
    assert r.status_code == 403 and "OCIFORGE_ENABLE_SHUTDOWN" in r.json()["error"]
    assert requests.get(echo.url + "/v2/health/live").status_code == 200


def test_status_carries_the_full_card(typed):
    status = requests.get(typed.url + "/status").json()
    for key in ("description", "authors", "license", "resources", "inputs", "outputs"):
        assert status[key] == TYPED_CARD[key]


# ---------------------------------------------------------------- operations


def test_openapi_document_covers_every_route(echo):
    doc = requests.get(echo.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    from ociforge_runtime.local import LocalServer

    local = LocalServer(models.echo, card={"name": "echo"})
    try:
        rules = {r.rule for r in local.app.url_map.iter_rules() if r.endpoint != "static"}
    finally:
        local.close()
    documented = set(doc["paths"])
    for rule in rules:
        path = rule.replace("<name>", "{model_name}").replace("<version>", "{model_version}")
        assert path in documented, f"{rule} is not in /openapi.json"
    for path, item in doc["paths"].items():
        for op in item.values():
            if isinstance(op, dict) and "responses" in op:
                assert "200" in op["responses"] or "202" in op["responses"], path


def test_metrics_are_prometheus_text(echo):
    requests.post(echo.url + "/predict", json={"m": 1})
    text = requests.get(echo.url + "/metrics").text
    assert "# TYPE ociforge_requests_total counter" in text
    assert 'ociforge_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'ociforge_request_duration_seconds_bucket{route="/predict",le="+Inf"}' in text
    assert "ociforge_model_ready 1" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_one_json_log_line_per_request(echo):
    requests.get(echo.url + "/v2/health/live?probe=1")
    lines = [rec for rec in echo.log_records() if rec.get("event") == "request"]
    assert lines, echo.stdout()
    last = [rec for rec in lines if rec["path"] == "/v2/health/live"][-1]
    assert last["method"] == "GET" and last["route"] == "/v2/health/live" and last["status"] == 200
    assert isinstance(last["latency_ms"], float) and last["latency_ms"] >= 0
    for raw in echo.stdout().splitlines():
        json.loads(raw)  # nothing but JSON lines on stdout
