"""Behaviour of a real server process: batching, readiness, limits, failures, lifecycle."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import runtime_models as models


def _metric(text: str, name: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"{name} not in metrics"
    return total


def test_concurrent_requests_are_batched_each_caller_gets_its_own_answer(start_server, tmp_path):
    log = tmp_path / "calls.log"
    server = start_server(
        models.batch_double,
        batch_size=8,
        env={"BATCH_LOG": str(log), "OCIFORGE_BATCH_MAX_WAIT_MS": "100"},
    )
    n = 24

    def call(i):
        return requests.post(server.url + "/predict", json=i, timeout=30)

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(call, range(n)))
    assert [r.status_code for r in responses] == [200] * n
    assert [r.json()["prediction"] for r in responses] == [
        {"input": i, "double": 2 * i} for i in range(n)
    ]
    sizes = [int(s) for s in log.read_text().split()]
    assert sum(sizes) == n
    assert len(sizes) < n, f"no batching happened: {sizes}"
    assert max(sizes) <= 8
    metrics = requests.get(server.url + "/metrics").text
    assert _metric(metrics, "ociforge_batch_size_count") == len(sizes)
    assert _metric(metrics, "ociforge_batch_size_sum") == n


def test_batch_route_on_batch_model_is_chunked_by_batch_size(start_server, tmp_path):
    log = tmp_path / "calls.log"
    server = start_server(models.batch_double, batch_size=4, env={"BATCH_LOG": str(log)})
    r = requests.post(server.url + "/predict/batch", json=list(range(10)))
    assert r.status_code == 200
    assert [p["double"] for p in r.json()["predictions"]] == [2 * i for i in range(10)]
    sizes = [int(s) for s in log.read_text().split()]
    assert sum(sizes) == 10 and max(sizes) <= 4 and len(sizes) >= 3


def test_batch_model_returning_wrong_length_is_500(start_server):
    server = start_server(models.batch_wrong_length, batch_size=4)
    r = requests.post(server.url + "/predict/batch", json=[1, 2])
    assert r.status_code == 500
    assert "returned 1 results for 2 inputs" in r.json()["error"]  # our words, not the model's
    assert requests.get(server.url + "/v2/health/ready").status_code == 200


def test_ready_only_after_model_loaded_and_requests_wait_for_it(start_server):
    server = start_server(models.SlowLoad, env={"LOAD_SECONDS": "2"}, wait=False)
    deadline = time.monotonic() + 15
    while True:
        try:
            live = requests.get(server.url + "/v2/health/live", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                pytest.fail(f"the server never answered /v2/health/live:\n{server.logs()}")
            time.sleep(0.02)
    assert live.status_code == 200
    ready = requests.get(server.url + "/v2/health/ready")
    assert ready.status_code == 503 and ready.json() == {"ready": False}
    assert requests.get(server.url + "/status").json()["status"] == "loading"
    # a prediction sent while loading waits for the model instead of failing
    r = requests.post(server.url + "/predict", json=1, timeout=30)
    assert r.status_code == 200 and r.json()["prediction"] == {"loaded": True, "x": 1}
    assert requests.get(server.url + "/v2/health/ready").status_code == 200


def test_model_failing_to_load_exits_non_zero_with_reason_in_log(start_server):
    server = start_server(models.FailingLoad, wait=False)
    code = server.proc.wait(30)
    assert code != 0
    failures = [r for r in server.log_records() if r.get("event") == "model_load_failed"]
    assert failures, server.logs()
    assert "weights file missing: /nowhere/weights.bin" in failures[0]["error"]
    assert "Traceback" in failures[0]["traceback"]


def test_missing_package_and_bad_config_exit_non_zero(start_server, tmp_path):
    server = start_server(
        models.echo, env={"OCIFORGE_MODEL_DIR": str(tmp_path / "absent")}, wait=False
    )
    assert server.proc.wait(30) != 0
    assert "model.json is missing" in server.logs()
    server = start_server(models.echo, env={"OCIFORGE_TIMEOUT": "soon"}, wait=False)
    assert server.proc.wait(30) == 2
    assert "OCIFORGE_TIMEOUT='soon' is not a number" in server.logs()


@pytest.mark.parametrize(("mode", "work"), [("interrupt", "spin:3"), ("thread", "sleep:3")])
def test_per_request_timeout_is_504_and_server_keeps_serving(start_server, mode, work):
    env = {"OCIFORGE_TIMEOUT": "0.5", "OCIFORGE_TIMEOUT_MODE": mode}
    server = start_server(models.echo, env=env)
    # The model works for 3 s; the answer must come at the 0.5 s deadline, not when the model
    # finishes: a client that gives up after 2.5 s would raise instead of seeing the 504.
    r = requests.post(
        server.url + "/predict", data=work, headers={"Content-Type": "text/plain"}, timeout=2.5
    )
    assert r.status_code == 504
    assert "did not finish within 0.5s" in r.json()["error"]
    assert requests.post(server.url + "/predict", json={"ok": 1}).status_code == 200


def test_concurrency_limit_rejects_with_503(start_server):
    server = start_server(
        models.Counting, env={"OCIFORGE_MAX_CONCURRENCY": "2", "OCIFORGE_THREADS": "8"}
    )

    def call(_):
        return requests.post(server.url + "/predict", json={"sleep": 0.6}, timeout=30)

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(call, range(6)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    assert set(codes) <= {200, 503}
    for r in responses:
        if r.status_code == 200:
            assert r.json()["prediction"]["max_active"] <= 2
        else:
            assert "server busy" in r.json()["error"] and r.headers["Retry-After"]
    assert requests.post(server.url + "/predict", json={}).status_code == 200


def test_class_model_is_loaded_once_per_worker(start_server):
    server = start_server(models.Counting, env={"OCIFORGE_WORKERS": "2"})
    with ThreadPoolExecutor(8) as pool:
        preds = [
            r.json()["prediction"]
            for r in pool.map(
                lambda _: requests.post(server.url + "/predict", json={"sleep": 0.05}), range(40)
            )
        ]
    assert all(p["loads"] == 1 for p in preds)
    assert requests.get(server.url + "/status").json()["server"]["workers"] == 2


def test_metrics_are_summed_across_workers(start_server):
    server = start_server(models.echo, env={"OCIFORGE_WORKERS": "2"})
    for i in range(20):
        assert requests.post(server.url + "/predict", json=i).status_code == 200
    time.sleep(1.5)  # workers share their numbers about once a second
    text = requests.get(server.url + "/metrics").text
    line = 'ociforge_requests_total{method="POST",route="/predict",status="200"}'
    assert _metric(text, line) == 20
    assert _metric(text, "ociforge_model_ready") == 2


def test_seldon_object_tags_and_metrics(start_server):
    server = start_server(models.Seldon())
    r = requests.post(server.url + "/predict", json=[[1, 2], [3, 4]])
    assert r.status_code == 200
    assert r.json()["prediction"] == [3, 7]
    assert r.json()["meta"]["tags"] == {"model": "seldon", "calls": 1}
    requests.post(server.url + "/predict", json=[[1]])
    text = requests.get(server.url + "/metrics").text
    assert _metric(text, "ociforge_model_rows_seen") == 2
    assert _metric(text, "ociforge_model_last_calls") == 2
    assert _metric(text, "ociforge_model_fake_ms_count") == 2


def test_unencodable_output_is_500(start_server):
    server = start_server(models.unserialisable)
    r = requests.post(server.url + "/predict", json=1)
    assert r.status_code == 500
    assert r.json()["error"] == "the model's output cannot be encoded as JSON"


def test_shutdown_route_when_enabled_stops_gracefully(start_server):
    server = start_server(models.echo, env={"OCIFORGE_ENABLE_SHUTDOWN": "1"})
    # what a browser page could send is refused (CSRF): a form post, a no-CORS fetch, a
    # cross-site request; the server keeps running
    url = server.url + "/shutdown"
    assert requests.post(url).status_code == 415
    assert requests.post(url, data={"a": "1"}).status_code == 415
    assert requests.post(url, data="{}", headers={"Content-Type": "text/plain"}).status_code == 415
    r = requests.post(url, json={}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and "cross-site" in r.json()["error"]
    r = requests.post(url, json={}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "Origin" in r.json()["error"]
    assert requests.post(url, json={}, headers={"Origin": "null"}).status_code == 403
    assert server.proc.poll() is None
    assert requests.get(server.url + "/v2/health/live").status_code == 200
    # an operator's tool: JSON content type, no browser headers
    r = requests.post(url, json={})
    assert r.status_code == 202 and r.json() == {"shutting_down": True}
    assert server.proc.wait(20) == 0
    assert re.search(r'"event":"shutdown_requested"', server.stdout())
