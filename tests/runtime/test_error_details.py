"""What a client learns from an error: a generic message and a request id by default, the
model's exception text only in the log (or with OCIFORGE_ERROR_DETAILS=1); the local test
path still gives the developer the real exception."""

from __future__ import annotations

import re

import pytest
from ociforge_runtime import local
from ociforge_runtime.config import Settings

from tests.runtime.conftest import app_for

SECRET = "postgresql://scott:tiger@db.internal:5432/prod (/srv/models/weights.bin)"


def leaky(x):
    """A model whose exception text carries what a client must not see."""
    raise RuntimeError(f"could not connect to {SECRET}")


CARD = {"name": "leaky", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}]}
INFER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}


@pytest.mark.parametrize(
    ("route", "kwargs"),
    [
        ("/predict", {"json": 1}),
        ("/predict/batch", {"json": [1, 2]}),
        ("/run", {"json": 1}),
        ("/v2/models/leaky/infer", {"json": INFER}),
    ],
)
def test_model_error_answers_generic_message_and_request_id(log_lines, route, kwargs):
    app, _ = app_for(leaky, card=CARD)
    r = app.test_client().post(route, **kwargs)
    assert r.status_code == 500
    body = r.get_json()
    assert body["error"] == "the model raised an error"
    assert re.fullmatch(r"[0-9a-f]{16}", body["request_id"])
    assert r.headers["X-Request-Id"] == body["request_id"]
    text = r.get_data(as_text=True)
    assert "tiger" not in text and "RuntimeError" not in text and "/srv" not in text
    [line] = [rec for rec in log_lines() if rec.get("event") == "model_error"]
    assert line["request_id"] == body["request_id"]
    assert SECRET in line["error"] and "RuntimeError" in line["traceback"]


def test_error_details_on_for_development(log_lines):
    app, _ = app_for(leaky, card=CARD, error_details=True)
    r = app.test_client().post("/predict", json=1)
    assert r.status_code == 500
    body = r.get_json()
    assert body["error"] == f"model raised RuntimeError: could not connect to {SECRET}"
    assert body["request_id"] == r.headers["X-Request-Id"]
    assert Settings.from_env({"OCIFORGE_ERROR_DETAILS": "1"}).error_details is True
    assert Settings.from_env({}).error_details is False


def test_internal_errors_get_a_request_id_and_no_details(log_lines):
    app, _ = app_for(leaky, card=CARD)

    @app.get("/crash")
    def crash():
        raise KeyError(SECRET)

    r = app.test_client().get("/crash")
    assert r.status_code == 500
    assert r.get_json() == {
        "error": "internal server error",
        "request_id": r.headers["X-Request-Id"],
    }
    [line] = [rec for rec in log_lines() if rec.get("event") == "internal_error"]
    assert line["request_id"] == r.headers["X-Request-Id"] and SECRET in line["traceback"]


def test_local_test_still_gives_the_developer_the_real_exception():
    with pytest.raises(local.LocalTestError) as info:
        local.test(leaky, 1)
    assert info.value.status == 500
    assert SECRET in info.value.message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert SECRET in str(info.value.__cause__)


def test_status_shows_no_pid_or_uid():
    app, _ = app_for(leaky, card=CARD)
    server = app.test_client().get("/status").get_json()["server"]
    assert "pid" not in server and "uid" not in server
    assert set(server) == {"workers", "threads", "uptime_s"}


def test_shutdown_refuses_what_a_browser_page_can_send():
    from ociforge_runtime.app import create_app

    calls = []
    _, predictor = app_for(leaky, card=CARD, enable_shutdown=True)
    app = create_app(predictor, predictor.settings, shutdown=lambda: calls.append(1))
    client = app.test_client()
    form = client.post("/shutdown", data={"a": "1"})  # an HTML form
    assert form.status_code == 415 and calls == []
    assert client.post("/shutdown").status_code == 415  # a no-CORS fetch without a body
    assert client.post("/shutdown", data="{}", content_type="text/plain").status_code == 415
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},
    ):
        r = client.post("/shutdown", json={}, headers=headers)
        assert r.status_code == 403, headers
    assert calls == []
    r = client.post("/shutdown", json={}, headers={"Origin": "http://localhost"})
    assert r.status_code == 202 and calls == [1]
    assert client.post("/shutdown", json={}).status_code == 202 and calls == [1, 1]
