"""A model built with ``grpc=True`` runs as its manifests run it: read-only root, writable /tmp,
and answers every client the serving world has.

ONE image (linux/amd64, into an OCI layout) is built for the module, unpacked, and its own
entrypoint started once under bubblewrap with the root filesystem bound read-only and a tmpfs on
/tmp (what ``readOnlyRootFilesystem: true`` with an ``emptyDir`` on /tmp gives a pod), as its
non-root user, with two workers. Predictions over HTTP (OIP v2) and gRPC must equal the local
ones; then each client, from a virtual environment of its own (tests/support/peers.py), drives
the image: ``tritonclient.http`` (binary and JSON tensors), ``tritonclient.grpc``, ``kserve``'s
v1 and v2 REST clients and its gRPC client, ``seldon-core``'s ``SeldonClient``, and
``grpc.health.v1.Health`` (what Kubernetes' ``grpc:`` probe asks), each answer compared with the
local prediction. SIGTERM then stops it with exit code 0, and ``BuildResult.manifests`` pins
that build by digest.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "runtimes"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from ociforge_runtime import local  # noqa: E402
from ociforge_runtime._proto import grpc_predict_v2_pb2 as pb  # noqa: E402

import ociforge  # noqa: E402
from ociforge.transports.transport import open_source  # noqa: E402
from tests.build.conftest import free_port  # noqa: E402
from tests.support.peers import peer_python, run_peer  # noqa: E402
from tests.support.rootfs import can_run, command, unpack  # noqa: E402

TRITON_GRPC = ("tritonclient-grpc", ["tritonclient[grpc]==2.63.0", "numpy"], "tritonclient.grpc")
KSERVE_GRPC = ("kserve-0.16", ["kserve==0.16.0", "kubernetes==31.0.0"], "kserve")
CARD = {
    "resources": {"cpu": "1", "memory": "512Mi"},
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}
SAMPLE = [[0.5, -1.0, 2.0], [3.0, 4.25, -0.125]]
MODEL = """
def predict(x):
    import numpy as np

    return np.asarray(x, dtype=np.float32) * 2 + 1
"""


def read_only(cmd: list[str]) -> list[str]:
    """bubblewrap's command with the root bound read-only and a tmpfs on /tmp."""
    i = cmd.index("--bind")
    assert cmd[i + 2] == "/", cmd
    return [*cmd[:i], "--ro-bind", cmd[i + 1], "/", "--tmpfs", "/tmp", *cmd[i + 3 :]]


def arbiter_pid(bwrap_pid: int) -> int:
    """The host pid of the first ``python`` under bubblewrap: gunicorn's arbiter."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    todo = list(children.get(bwrap_pid, []))
    while todo:
        pid = todo.pop(0)
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"python" in argv[0] and b"ociforge_runtime" in argv:  # not bwrap's own
                return pid
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    raise AssertionError("no ociforge_runtime process under bubblewrap")


def grpc_infer(port: int, x: np.ndarray) -> np.ndarray:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        request = pb.ModelInferRequest(model_name="affine")
        request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
        request.raw_input_contents.append(x.astype("<f4").tobytes())
        response = infer(request, timeout=30)
    out = response.outputs[0]
    assert out.name == "y" and out.datatype == "FP32"
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(out.shape))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The one grpc=True build of this module: (BuildResult, image, the model function)."""
    why = can_run("linux/amd64")
    if why:
        pytest.fail(f"cannot run linux/amd64 here: {why}")
    tmp = tmp_path_factory.mktemp("grpc-image")
    src = tmp / "model_src.py"
    src.write_text(textwrap.dedent(MODEL))
    predict = runpy.run_path(str(src), run_name="__ociforge_model__")["predict"]
    layout = f"oci:{tmp / 'out'}:m"
    result = ociforge.build(
        predict, platforms=["linux/amd64"], to=layout, name="affine", metadata=CARD, grpc=True
    )
    return result, open_source(layout, platform="linux/amd64"), predict


@pytest.fixture(scope="module")
def expected(built) -> np.ndarray:
    predict = built[2]
    return np.asarray(
        local.test(predict, SAMPLE, card={"name": "affine", **CARD})["prediction"],
        dtype=np.float32,
    )


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    """The image's own entrypoint, read-only root, two workers; stopped by the SIGTERM test."""
    _, img, _ = built
    cfg = img.config.config
    env = cfg.env_dict()
    root = unpack(img, tmp_path_factory.mktemp("rootfs") / "root")
    http_port, grpc_port = free_port(), free_port()
    uid, _, gid = cfg.user.partition(":")
    cmd, _env, _cwd = command(
        root,
        list(cfg.entrypoint) + list(cfg.cmd or ()),
        "linux/amd64",
        env={
            **env,
            "PORT": str(http_port),
            "GRPC_PORT": str(grpc_port),
            "OCIFORGE_WORKERS": "2",
            "OCIFORGE_GRACEFUL_TIMEOUT": "10",
        },
        cwd=cfg.working_dir or "/",
        share_net=True,
        uid=int(uid),
        gid=int(gid or uid),
    )
    proc = subprocess.Popen(
        read_only(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited {proc.returncode}:\n{proc.stdout.read()[-4000:]}")
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server was not ready in 120s")
            time.sleep(0.3)
        yield {"proc": proc, "url": url, "grpc": f"127.0.0.1:{grpc_port}", "grpc_port": grpc_port}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_grpc_image_carries_grpc_and_its_health_service(built):
    result, img, _ = built
    assert any(r.startswith("grpcio-health-checking") for r in result.requirements)
    assert any(r.startswith("grpcio") for r in result.requirements)
    cfg = img.config.config
    env = cfg.env_dict()
    assert env["OCIFORGE_GRPC"] == "1" and env["GRPC_PORT"] == "8081"
    assert "8081/tcp" in cfg.exposed_ports and "8080/tcp" in cfg.exposed_ports


def test_serves_http_and_grpc_from_a_read_only_root(server, expected):
    url = server["url"]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": SAMPLE}]}
    answer = requests.post(f"{url}/v2/models/affine/infer", json=body, timeout=30).json()
    np.testing.assert_array_equal(
        np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 3), expected
    )
    x = np.asarray(SAMPLE, dtype=np.float32)
    for _ in range(4):  # new connections: the kernel spreads them over both workers
        np.testing.assert_array_equal(grpc_infer(server["grpc_port"], x), expected)
    # /metrics merges the other worker's snapshot, which it writes once a second
    # (ociforge_runtime.metrics.Exporter): a few reads, not one, see the gRPC calls there
    for _ in range(20):
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        if 'route="grpc:ModelInfer",status="200"' in metrics:
            break
        time.sleep(0.25)
    assert 'route="grpc:ModelInfer",status="200"' in metrics


TRITON_HTTP = r"""
import json, sys
import numpy as np
import tritonclient.http as httpclient
a = json.loads(sys.argv[1])
c = httpclient.InferenceServerClient(a["url"])
x = np.array(a["x"], dtype=np.float32)
out = {"ready": c.is_model_ready("affine")}
for key, binary in (("binary", True), ("json", False)):
    i = httpclient.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    o = httpclient.InferRequestedOutput("y", binary_data=binary)
    r = c.infer("affine", [i], outputs=[o])
    out[key] = {"y": r.as_numpy("y").tolist(), "binary": "data" not in r.get_response()["outputs"][0]}
print(json.dumps(out))
"""

TRITON_GRPC_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as g
a = json.loads(sys.argv[1])
c = g.InferenceServerClient(a["grpc"])
x = np.array(a["x"], dtype=np.float32)
i = g.InferInput("x", list(x.shape), "FP32")
i.set_data_from_numpy(x)
r = c.infer("affine", [i])
print(json.dumps({"ready": c.is_model_ready("affine"), "y": r.as_numpy("y").tolist()}))
"""

KSERVE_REST = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, RESTConfig, InferRequest, InferInput
a = json.loads(sys.argv[1])

async def main():
    out = {}
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=1))
    out["v1"] = await v1.infer(a["url"], {"instances": a["x"]}, model_name="affine")
    await v1.close()
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=1))
    x = np.array(a["x"], dtype=np.float32)
    for key, binary in (("v2_binary", True), ("v2_json", False)):
        inp = InferInput(name="x", shape=list(x.shape), datatype="FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        res = await v2.infer(a["url"], InferRequest(model_name="affine", infer_inputs=[inp]),
                             model_name="affine")
        out[key] = res.outputs[0].as_numpy().tolist()
    await v2.close()
    print(json.dumps(out))

asyncio.run(main())
"""

KSERVE_GRPC_SCRIPT = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
a = json.loads(sys.argv[1])

async def main():
    c = InferenceGRPCClient(url=a["grpc"], timeout=20, retries=2)
    x = np.array(a["x"], dtype=np.float32)
    i = InferInput(name="x", shape=list(x.shape), datatype="FP32")
    i.set_data_from_numpy(x, binary_data=True)
    r = await c.infer(InferRequest(model_name="affine", infer_inputs=[i]))
    out = {"ready": await c.is_model_ready("affine"), "y": r.outputs[0].as_numpy().tolist()}
    await c.close()
    print(json.dumps(out))

asyncio.run(main())
"""

SELDON = r"""
import json, sys
import numpy as np
from seldon_core.seldon_client import SeldonClient
from seldon_core.utils import seldon_message_to_json
a = json.loads(sys.argv[1])
sc = SeldonClient(microservice_endpoint=a["endpoint"])
r = sc.microservice(transport="rest", method="predict", data=np.array(a["x"]), payload_type="ndarray")
print(json.dumps({"success": r.success, "msg": r.msg, "response": seldon_message_to_json(r.response)}))
"""


def test_every_client_against_the_image(server, expected):
    """Each client from its own venv; each answer equals the local prediction."""
    url, grpc_addr = server["url"], server["grpc"]
    hostport = url.removeprefix("http://")
    want = expected.tolist()
    args = {"url": hostport, "grpc": grpc_addr, "x": SAMPLE}

    out = run_peer(peer_python("tritonclient"), TRITON_HTTP, args)
    assert out["ready"] is True
    assert out["binary"] == {"y": want, "binary": True}
    assert out["json"] == {"y": want, "binary": False}

    out = run_peer(peer_python(*TRITON_GRPC), TRITON_GRPC_SCRIPT, args)
    assert out == {"ready": True, "y": want}

    out = run_peer(peer_python("kserve"), KSERVE_REST, {**args, "url": url})
    assert out["v1"] == {"predictions": want}  # each instance, as /predict/batch gives it
    assert out["v2_binary"] == want and out["v2_json"] == want

    out = run_peer(peer_python(*KSERVE_GRPC), KSERVE_GRPC_SCRIPT, args)
    assert out == {"ready": True, "y": want}

    out = run_peer(peer_python("seldon-core"), SELDON, {"endpoint": hostport, "x": SAMPLE})
    assert out["success"], out
    assert out["response"]["data"]["ndarray"] == want


def test_grpc_health_service_of_the_image(server):
    """What Kubernetes' ``grpc:`` probes ask: the image's health service answers SERVING for the
    server and the inference service (the model has loaded), and for ``liveness``."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server["grpc"]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "liveness"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_sigterm_stops_the_image_cleanly(server):
    proc = server["proc"]
    # SIGTERM to the server's arbiter, as the kubelet does (bwrap itself would just die)
    os.kill(arbiter_pid(proc.pid), signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stdout.read()[-4000:]


def test_manifests_pin_the_build(built):
    result = built[0]
    text = result.manifests("kubernetes", repository="registry.example.com/team/affine")
    docs = list(yaml.safe_load_all(text))
    ctr = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert ctr["image"] == f"registry.example.com/team/affine@{result.digest}"
    assert [p["containerPort"] for p in ctr["ports"]] == [8080, 8081]
    assert ctr["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    ksvc = yaml.safe_load(
        result.manifests(
            "kserve", repository="registry.example.com/team/affine", protocol="grpc-v2"
        )
    )
    kctr = ksvc["spec"]["predictor"]["containers"][0]
    assert kctr["readinessProbe"]["grpc"] == {"port": 8081}
