"""OIP v2 over gRPC, against a real server process, driven by real clients.

``tritonclient[grpc]`` and ``kserve`` (its ``InferenceGRPCClient``) each run from a virtual
environment of their own (tests/support/peers.py); answers are compared with the local
prediction (``ociforge_runtime.local``). Lifecycle checks (readiness, SIGTERM, limits) use
grpcio from the test environment with the runtime's own stubs.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import grpc
import grpc_models
import numpy as np
import pytest
import requests
import runtime_models

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ociforge_runtime import local  # noqa: E402
from ociforge_runtime._proto import grpc_predict_v2_pb2 as pb  # noqa: E402

from tests.support.peers import peer_python, run_peer  # noqa: E402

cloudpickle.register_pickle_by_value(grpc_models)

TRITON = ("tritonclient-grpc", ["tritonclient[grpc]==2.63.0", "numpy"], "tritonclient.grpc")
KSERVE = ("kserve-0.16", ["kserve==0.16.0", "kubernetes==31.0.0"], "kserve")

AFFINE_CARD = {
    "name": "affine",
    "version": "2",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}
SAMPLE = [[0.5, -1.0, 2.0], [3.0, 4.25, -0.125]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grpc_env(**extra: str) -> dict[str, str]:
    return {"OCIFORGE_GRPC": "1", "GRPC_PORT": str(free_port()), **extra}


def target(server) -> str:
    return f"127.0.0.1:{server.grpc_port}"


def started(start, model, env: dict[str, str] | None = None, **kwargs):
    env = grpc_env(**(env or {}))
    server = start(model, env=env, **kwargs)
    server.grpc_port = int(env["GRPC_PORT"])
    return server


class Stub:
    """The six RPCs through grpcio with the runtime's own messages."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)

    def call(self, rpc: str, request, response_cls, timeout: float = 10):
        method = self.channel.unary_unary(
            f"/inference.GRPCInferenceService/{rpc}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        return method(request, timeout=timeout)

    def ready(self) -> bool:
        return self.call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready

    def infer(self, model: str, x: np.ndarray, name: str = "x", timeout: float = 10):
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
        request.raw_input_contents.append(x.astype("<f4").tobytes())
        response = self.call("ModelInfer", request, pb.ModelInferResponse, timeout)
        out = response.outputs[0]
        return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(out.shape))

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def triton_python() -> Path:
    return peer_python(*TRITON)


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    return peer_python(*KSERVE)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two gRPC-enabled servers for the client tests: a typed card and a free-form model."""
    from ociforge_runtime.package import package_files, write_package

    from tests.runtime.conftest import Server

    made = {}
    for key, model, card in (
        ("affine", grpc_models.affine, AFFINE_CARD),
        ("mixed", grpc_models.mixed, {"name": "mixed"}),
    ):
        path = tmp_path_factory.mktemp("pkg")
        write_package(path, package_files(model, card=card))
        env = grpc_env()
        server = Server(path, tmp_path_factory.mktemp("srv"), env)
        server.grpc_port = int(env["GRPC_PORT"])
        made[key] = server
    for server in made.values():
        server.wait_ready()
    yield made
    for server in made.values():
        server.kill()


def local_prediction() -> np.ndarray:
    answer = local.test(grpc_models.affine, SAMPLE, card=AFFINE_CARD)
    return np.asarray(answer["prediction"], dtype=np.float32)


TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as g
from tritonclient.utils import InferenceServerException

a = json.loads(sys.argv[1])
out = {}
c = g.InferenceServerClient(a["affine"])
out["live"] = c.is_server_live()
out["ready"] = c.is_server_ready()
out["model_ready"] = c.is_model_ready("affine")
out["model_ready_v"] = c.is_model_ready("affine", "2")
out["server"] = c.get_server_metadata(as_json=True)
out["metadata"] = c.get_model_metadata("affine", as_json=True)
try:
    c.get_model_metadata("nope")
except InferenceServerException as e:
    out["unknown_model"] = e.status()

def infer(client, model, arrays, dtypes, outputs=None, request_id=""):
    inputs = []
    for (name, arr), dt in zip(arrays.items(), dtypes):
        i = g.InferInput(name, list(arr.shape), dt)
        i.set_data_from_numpy(arr)
        inputs.append(i)
    outs = [g.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer(model, inputs, outputs=outs, request_id=request_id)

x = np.array(a["x"], dtype=np.float32)
r = infer(c, "affine", {"x": x}, ["FP32"], request_id="req-1")
out["y"] = r.as_numpy("y").tolist()
out["y_dtype"] = str(r.as_numpy("y").dtype)
out["id"] = r.get_response().id
bad = []
for arrays, dtypes in (
    ({"x": x.astype(np.int32)}, ["INT32"]),  # wrong datatype for the card
    ({"x": x.reshape(-1)}, ["FP32"]),  # wrong rank
    ({"z": x}, ["FP32"]),  # unknown input
):
    try:
        infer(c, "affine", arrays, dtypes)
        bad.append(None)
    except InferenceServerException as e:
        bad.append([e.status(), e.message()])
out["bad"] = bad
out["after_bad"] = infer(c, "affine", {"x": x}, ["FP32"]).as_numpy("y").tolist()

m = g.InferenceServerClient(a["mixed"])
s = np.array([[b"ab", b"\x00\xffz"], [b"", "caf\u00e9".encode()]], dtype=np.object_)
r = infer(m, "mixed", {"s": s}, ["BYTES"])
out["bytes"] = [v.hex() for v in r.as_numpy("output-0").ravel().tolist()]
out["bytes_shape"] = list(r.as_numpy("output-0").shape)
ai = np.arange(6, dtype=np.int64).reshape(2, 3)
bi = np.full((2, 3), 7, dtype=np.int64)
r = infer(m, "mixed", {"a": ai, "b": bi}, ["INT64", "INT64"], outputs=["prod"])
out["only_prod"] = [o.name for o in r.get_response().outputs]
out["prod"] = r.as_numpy("prod").tolist()
h = np.array([1.5, -2.0], dtype=np.float16)
r = infer(m, "mixed", {"h": h}, ["FP16"])
out["fp16"] = [str(r.as_numpy("output-0").dtype), r.as_numpy("output-0").tolist()]
try:
    infer(m, "mixed", {"x": np.array([-1.0], dtype=np.float32)}, ["FP32"])
except InferenceServerException as e:
    out["model_error"] = [e.status(), e.message()]
print(json.dumps(out))
"""


def test_tritonclient_grpc(servers, triton_python):
    args = {
        "affine": target(servers["affine"]),
        "mixed": target(servers["mixed"]),
        "x": SAMPLE,
    }
    out = run_peer(triton_python, TRITON_SCRIPT, args)
    assert out["live"] and out["ready"] and out["model_ready"] and out["model_ready_v"]
    assert out["server"]["name"] == "ociforge" and out["server"]["version"]
    meta = out["metadata"]
    assert meta["name"] == "affine" and meta["versions"] == ["2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "3"]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "3"]}]
    assert out["unknown_model"] == "StatusCode.NOT_FOUND"
    expected = local_prediction()
    np.testing.assert_array_equal(np.asarray(out["y"], dtype=np.float32), expected)
    assert out["y_dtype"] == "float32" and out["id"] == "req-1"
    for entry, needle in zip(
        out["bad"], ("expected datatype FP32", "expected shape", "missing input 'x'"), strict=True
    ):
        assert entry is not None and entry[0] == "StatusCode.INVALID_ARGUMENT", entry
        assert needle in entry[1], entry
    np.testing.assert_array_equal(np.asarray(out["after_bad"], dtype=np.float32), expected)
    # BYTES both ways with 4-byte length prefixes: empty, NUL and non-UTF-8 elements survive
    assert out["bytes"] == [b"AB".hex(), b"\x00\xffZ".hex(), "", "CAFé".encode().hex()]
    assert out["bytes_shape"] == [2, 2]
    assert out["only_prod"] == ["prod"]
    assert out["prod"] == (np.arange(6).reshape(2, 3) * 7).tolist()
    assert out["fp16"] == ["float16", [4.5, -6.0]]
    status, message = out["model_error"]
    assert status == "StatusCode.INTERNAL"
    assert "the model raised an error" in message and "request_id" in message
    assert "negative on purpose" not in message  # only with OCIFORGE_ERROR_DETAILS=1


KSERVE_SCRIPT = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

a = json.loads(sys.argv[1])

async def main():
    out = {}
    c = InferenceGRPCClient(url=a["affine"], timeout=20, retries=2)
    out["live"] = await c.is_server_live()
    out["ready"] = await c.is_server_ready()
    out["model_ready"] = await c.is_model_ready("affine")
    x = np.array(a["x"], dtype=np.float32)
    raw = InferInput(name="x", shape=list(x.shape), datatype="FP32")
    raw.set_data_from_numpy(x, binary_data=True)  # raw_input_contents
    r = await c.infer(InferRequest(model_name="affine", infer_inputs=[raw], request_id="k-1"))
    out["raw"] = r.outputs[0].as_numpy().tolist()
    out["raw_name"] = r.outputs[0].name
    out["id"] = r.id
    typed = InferInput(name="x", shape=list(x.shape), datatype="FP32", data=x.ravel().tolist())
    r = await c.infer(InferRequest(model_name="affine", infer_inputs=[typed]))  # typed contents
    out["typed"] = r.outputs[0].as_numpy().tolist()
    bad = InferInput(name="x", shape=[2, 3], datatype="FP32", data=[1.0, 2.0])
    try:
        await c.infer(InferRequest(model_name="affine", infer_inputs=[bad]))
        out["bad"] = None
    except Exception as e:
        out["bad"] = [str(getattr(e, "code", lambda: "")()), str(getattr(e, "details", lambda: e)())]
    r = await c.infer(InferRequest(model_name="affine", infer_inputs=[raw]))
    out["after_bad"] = r.outputs[0].as_numpy().tolist()
    await c.close()
    m = InferenceGRPCClient(url=a["mixed"], timeout=20, retries=2)
    ints = InferInput(name="i", shape=[3], datatype="INT32", data=[1, -2, 3])
    r = await m.infer(InferRequest(model_name="mixed", infer_inputs=[ints]))
    out["int32"] = [r.outputs[0].datatype, r.outputs[0].as_numpy().tolist()]
    await m.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_kserve_grpc_client(servers, kserve_python):
    args = {"affine": target(servers["affine"]), "mixed": target(servers["mixed"]), "x": SAMPLE}
    out = run_peer(kserve_python, KSERVE_SCRIPT, args)
    assert out["live"] and out["ready"] and out["model_ready"]
    expected = local_prediction()
    for key in ("raw", "typed", "after_bad"):
        np.testing.assert_array_equal(np.asarray(out[key], dtype=np.float32), expected)
    assert out["raw_name"] == "y" and out["id"] == "k-1"
    assert out["bad"] is not None and "INVALID_ARGUMENT" in out["bad"][0], out["bad"]
    assert "needs 6 elements, got 2" in out["bad"][1]
    assert out["int32"] == ["INT32", [3, -6, 9]]


def test_grpc_requests_in_metrics(servers):
    stub = Stub(target(servers["affine"]))
    try:
        stub.infer("affine", np.ones((1, 3), dtype=np.float32))
        with pytest.raises(grpc.RpcError) as err:
            stub.infer("affine", np.ones((1, 4), dtype=np.float32))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        stub.close()
    text = requests.get(servers["affine"].url + "/metrics").text
    ok = 'ociforge_requests_total{method="GRPC",route="grpc:ModelInfer",status="200"}'
    bad = 'ociforge_requests_total{method="GRPC",route="grpc:ModelInfer",status="400"}'
    assert ok in text and bad in text, text
    records = servers["affine"].log_records()
    assert any(r.get("event") == "request" and r.get("route") == "grpc:ModelInfer" for r in records)


def test_grpc_receive_limit_is_the_request_limit(start_server):
    server = started(
        start_server,
        grpc_models.affine,
        env={"OCIFORGE_MAX_REQUEST_BYTES": "4096"},
        card=AFFINE_CARD,
    )
    stub = Stub(target(server))
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub.infer("affine", np.zeros((1000, 3), dtype=np.float32))  # 12 kB
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        small = stub.infer("affine", np.zeros((2, 3), dtype=np.float32))
        np.testing.assert_array_equal(small, np.ones((2, 3), dtype=np.float32))
    finally:
        stub.close()


def test_grpc_ready_only_once_loaded(start_server):
    server = started(
        start_server,
        runtime_models.SlowLoad,
        env={"LOAD_SECONDS": "5"},
        wait=False,
        card={"name": "slowload"},
    )
    deadline = time.monotonic() + 20
    live = None
    while time.monotonic() < deadline:  # a fresh channel each time: no reconnect back-off
        stub = Stub(target(server))
        try:
            live = stub.call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
            break
        except grpc.RpcError:
            stub.close()
            time.sleep(0.05)
    try:
        assert live is not None and live.live
        assert stub.ready() is False
        model_ready = stub.call(
            "ModelReady", pb.ModelReadyRequest(name="slowload"), pb.ModelReadyResponse
        )
        assert model_ready.ready is False
        while time.monotonic() < deadline and not stub.ready():
            time.sleep(0.1)
        assert stub.ready() is True
    finally:
        stub.close()


def test_grpc_disabled_by_default(start_server):
    port = free_port()
    server = start_server(grpc_models.affine, env={"GRPC_PORT": str(port)}, card=AFFINE_CARD)
    stub = Stub(f"127.0.0.1:{port}")
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub.call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse, timeout=2)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        stub.close()
    assert requests.get(server.url + "/v2/health/ready").status_code == 200


def test_sigterm_finishes_rpcs_in_flight(start_server):
    server = started(start_server, grpc_models.slow)
    stub = Stub(target(server))
    results: dict[str, object] = {}

    def slow_call() -> None:
        try:
            results["answer"] = stub.infer("slow", np.array([1.5], dtype=np.float32), name="t")
        except grpc.RpcError as exc:  # pragma: no cover - reported by the assertion
            results["error"] = exc

    try:
        stub.infer("slow", np.array([0.0], dtype=np.float32), name="t")  # connected, warm
        thread = threading.Thread(target=slow_call)
        thread.start()
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late = Stub(target(server))
        try:
            with pytest.raises(grpc.RpcError) as err:
                late.infer("slow", np.array([0.0], dtype=np.float32), name="t", timeout=3)
            assert err.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        finally:
            late.close()
        thread.join(10)
        assert "error" not in results, results
        np.testing.assert_array_equal(results["answer"], np.array([1.5], dtype=np.float32))
        assert server.proc.wait(15) == 0
    finally:
        stub.close()


def test_enabled_without_grpcio_serves_http(start_server, tmp_path):
    """An image built without --grpc has no grpcio: OCIFORGE_GRPC=1 then logs a warning and
    HTTP serves alone (grpcio is hidden here by a module that fails to import)."""
    shim = tmp_path / "shim"
    (shim / "grpc").mkdir(parents=True)
    (shim / "grpc" / "__init__.py").write_text("raise ImportError('no grpcio in this image')\n")
    from tests.runtime.conftest import RUNTIMES

    server = started(
        start_server,
        grpc_models.affine,
        env={"PYTHONPATH": f"{shim}:{RUNTIMES}"},
        card=AFFINE_CARD,
    )
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": SAMPLE}]}
    answer = requests.post(server.url + "/v2/models/affine/infer", json=body).json()
    assert np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 3).tolist() == (
        local_prediction().tolist()
    )
    events = [r for r in server.log_records() if r.get("event") == "grpc_unavailable"]
    assert events and "no grpcio" in events[0]["error"]


def test_runtime_timeout_is_deadline_exceeded(start_server):
    # thread mode answers at the deadline even while the model sleeps inside one C call
    server = started(
        start_server,
        grpc_models.slow,
        env={"OCIFORGE_TIMEOUT": "1", "OCIFORGE_TIMEOUT_MODE": "thread"},
    )
    stub = Stub(target(server))
    try:
        # the client gives up at 2.5 s: only the server's own answer at its 1 s deadline names
        # OCIFORGE_TIMEOUT (the client's expiry says "Deadline Exceeded")
        with pytest.raises(grpc.RpcError) as err:
            stub.infer("slow", np.array([3.0], dtype=np.float32), name="t", timeout=2.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "OCIFORGE_TIMEOUT" in err.value.details()
        quick = stub.infer("slow", np.array([0.0], dtype=np.float32), name="t")
        np.testing.assert_array_equal(quick, np.array([0.0], dtype=np.float32))
    finally:
        stub.close()


# ------------------------------------------------------------------ grpc.health.v1.Health


def health_check(address: str, service: str = "", timeout: float = 5):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def test_grpc_health_follows_readiness(start_server):
    """What Kubernetes' native ``grpc:`` probe asks (grpcio-health-checking's own client here):
    NOT_SERVING while the model loads, SERVING once it has (whole server and the inference
    service), ``liveness`` SERVING all along, NOT_FOUND for another service; a ``Watch`` stream opened while loading is told of
    the change, then of NOT_SERVING at SIGTERM, and does not hold the worker past its RPCs."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = health_pb2.HealthCheckResponse
    server = started(
        start_server,
        runtime_models.SlowLoad,
        # a graceful timeout far above the wait below: only ended Watch streams let it exit
        env={"LOAD_SECONDS": "4", "OCIFORGE_GRACEFUL_TIMEOUT": "120"},
        wait=False,
        card={"name": "slowload"},
    )
    address = target(server)
    deadline = time.monotonic() + 20
    first = None
    while first is None and time.monotonic() < deadline:
        try:
            first = health_check(address)
        except grpc.RpcError:
            time.sleep(0.05)
    assert first == status.NOT_SERVING
    assert health_check(address, "liveness") == status.SERVING  # a liveness probe passes
    channel = grpc.insecure_channel(address)
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=60
        )
        seen = [next(watch).status]
        assert seen == [status.NOT_SERVING]
        seen.append(next(watch).status)  # pushed once the model has loaded
        assert seen[-1] == status.SERVING
        assert health_check(address) == status.SERVING
        assert requests.get(server.url + "/v2/health/ready").status_code == 200
        with pytest.raises(grpc.RpcError) as err:
            health_check(address, "no.such.Service")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        server.proc.send_signal(signal.SIGTERM)
        assert next(watch).status == status.NOT_SERVING
        assert server.proc.wait(30) == 0
    finally:
        channel.close()


def test_grpc_serves_without_the_health_package(start_server, tmp_path):
    """An image made before grpcio-health-checking was added: inference still serves over gRPC,
    a warning names what is missing, and the health service is UNIMPLEMENTED."""
    shim = tmp_path / "shim"
    (shim / "grpc_health").mkdir(parents=True)
    (shim / "grpc_health" / "__init__.py").write_text("raise ImportError('no grpc_health')\n")
    from tests.runtime.conftest import RUNTIMES

    server = started(
        start_server, grpc_models.affine, env={"PYTHONPATH": f"{shim}:{RUNTIMES}"}, card=AFFINE_CARD
    )
    stub = Stub(target(server))
    try:
        x = np.asarray(SAMPLE, dtype=np.float32)
        np.testing.assert_array_equal(stub.infer("affine", x), local_prediction())
    finally:
        stub.close()
    with pytest.raises(grpc.RpcError) as err:
        health_check(target(server))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    events = [r for r in server.log_records() if r.get("event") == "grpc_health_unavailable"]
    assert events and "no grpc_health" in events[0]["error"]
