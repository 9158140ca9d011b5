"""Request body limits: chunked bodies, deep JSON, JSON value counts, multipart part counts,
and admission (the concurrency slot) before any decoding."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest
import requests
import runtime_models as models
from ociforge_runtime import codec
from ociforge_runtime.errors import BadInput, TooLarge

from tests.runtime.conftest import app_for


@pytest.fixture(scope="module")
def limited(module_server):
    return module_server(
        "limited",
        models.describe,
        env={"OCIFORGE_MAX_JSON_VALUES": "1000", "OCIFORGE_MAX_FORM_PARTS": "50"},
    )


@pytest.fixture(scope="module")
def default(module_server):
    return module_server("default", models.describe)


# ---------------------------------------------------------------- deep and large JSON


def test_json_nested_50000_deep_is_400_with_a_message(default):
    for route, body in [
        ("/predict", b"[" * 50_000 + b"]" * 50_000),
        ("/predict/batch", b"[" + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]"),
        ("/v2/models/describe/infer", b"[" * 50_000),
    ]:
        r = requests.post(
            default.url + route, data=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, (route, r.status_code, r.text[:300])
        assert "nested too deeply" in r.json()["error"]
    assert not [rec for rec in default.log_records() if rec.get("event") == "internal_error"]


def test_json_with_more_values_than_the_limit_is_413_naming_the_limit(limited):
    r = requests.post(limited.url + "/predict/batch", json=[{}] * 1001)
    assert r.status_code == 413
    assert r.json()["error"].startswith("JSON body has more than 1000 values")
    assert "OCIFORGE_MAX_JSON_VALUES" in r.json()["error"]
    # separators inside strings are not values: a long text with many commas is fine
    r = requests.post(limited.url + "/predict", json={"text": ", ".join(["word"] * 5000)})
    assert r.status_code == 200 and r.json()["prediction"] == {"type": "dict", "keys": ["text"]}
    r = requests.post(limited.url + "/predict/batch", json=list(range(900)))
    assert r.status_code == 200 and len(r.json()["predictions"]) == 900


def test_value_limit_is_checked_before_decoding_and_bounds_memory():
    body = b"[" + b"{}," * 1_000_000 + b"{}]"  # 3 MB of text, ~70 MB of Python objects decoded
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge, match="more than 100000 values"):
            codec.decode_json(body, max_values=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak
    assert codec.json_values(b'[1, {"a": [2, 3]}, "x,y"]') >= 6
    assert codec.decode_json(b'["a,b,c,d,e", 1]', max_values=3) == ["a,b,c,d,e", 1]
    with pytest.raises(BadInput, match="nested too deeply"):
        codec.decode_json(b'{"a":' * 100_000, max_values=10**9)


# ---------------------------------------------------------------- multipart and forms


def test_multipart_with_too_many_parts_is_413_naming_the_part_limit(limited):
    files = [(f"f{i}", (f"{i}.bin", b"x")) for i in range(2000)]
    r = requests.post(limited.url + "/predict", files=files)
    assert r.status_code == 413
    assert r.json()["error"] == "multipart body has more than 50 parts (OCIFORGE_MAX_FORM_PARTS)"
    r = requests.post(limited.url + "/predict/batch", files=files[:50])
    assert r.status_code == 200 and len(r.json()["predictions"]) == 50
    r = requests.post(
        limited.url + "/predict",
        data="&".join(f"k{i}=v" for i in range(2000)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413 and "OCIFORGE_MAX_FORM_PARTS" in r.json()["error"]


def test_multipart_part_limit_default_is_named_too():
    app, _ = app_for(models.describe)
    data = {f"f{i}": (io.BytesIO(b"x"), f"{i}.bin") for i in range(2000)}
    r = app.test_client().post("/predict", data=data, content_type="multipart/form-data")
    assert r.status_code == 413
    assert r.get_json()["error"] == (
        "multipart body has more than 1000 parts (OCIFORGE_MAX_FORM_PARTS)"
    )


# ---------------------------------------------------------------- chunked bodies in the app


def _call(app, environ_overrides: dict, body: bytes) -> tuple[int, bytes]:
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(
        path="/predict", method="POST", content_type="application/octet-stream"
    )
    environ = builder.get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update(environ_overrides)
    environ["wsgi.input"] = io.BytesIO(body)
    out = {}

    def start_response(status, headers, exc_info=None):
        out["status"] = int(status.split()[0])

    chunks = app(environ, start_response)
    return out["status"], b"".join(chunks)


def test_chunked_body_over_the_limit_is_413_in_the_app_too():
    """Behind another server than ours, werkzeug would cut a chunked body at the limit and
    the model would see it truncated: the app reads it whole first."""
    app, _ = app_for(models.describe, max_request_bytes=1024)
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    status, body = _call(app, chunked, b"x" * 2000)
    assert status == 413
    assert json.loads(body)["error"] == (
        "request body is larger than 1024 bytes (OCIFORGE_MAX_REQUEST_BYTES)"
    )
    status, body = _call(app, chunked, b"x" * 1024)
    assert status == 200 and json.loads(body)["prediction"] == {"type": "bytes", "len": 1024}


# ---------------------------------------------------------------- admission before decoding


def test_a_busy_worker_refuses_before_decoding(monkeypatch):
    app, predictor = app_for(models.describe, max_concurrency=1, threads=1)
    decoded = []
    real = codec.decode_json
    monkeypatch.setattr(codec, "decode_json", lambda *a, **k: decoded.append(1) or real(*a, **k))
    client = app.test_client()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    assert predictor._slots.try_acquire()  # the one slot is taken by a request in flight
    try:
        for route, kwargs in [
            ("/predict", {"json": list(range(1000))}),
            ("/predict/batch", {"json": list(range(1000))}),
            ("/run", {"json": [1]}),
            ("/v2/models/describe/infer", {"json": body}),
        ]:
            r = client.post(route, **kwargs)
            assert r.status_code == 503, (route, r.get_data())
            assert "server busy" in r.get_json()["error"]
        assert decoded == []
    finally:
        predictor._slots.release()
    # the slot is back, and a request that fails to decode gives its slot back too
    r = client.post("/predict", data=b"{", content_type="application/json")
    assert r.status_code == 400
    r = client.post("/v2/models/describe/infer", json=body)
    assert r.status_code == 200, r.get_data()
    assert {o["name"] for o in r.get_json()["outputs"]} == {"type", "shape", "dtype"}
    assert len(decoded) == 2
