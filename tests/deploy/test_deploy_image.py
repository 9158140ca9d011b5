"""A model built with ``grpc=True`` runs as its manifests run it: read-only root, writable /tmp.

The image (linux/amd64, into an OCI layout) is unpacked and its own entrypoint started under
bubblewrap with the root filesystem bound read-only and a tmpfs on /tmp (what
``readOnlyRootFilesystem: true`` with an ``emptyDir`` on /tmp gives a pod), as its non-root
user, with two workers: predictions over HTTP (OIP v2) and gRPC must equal the local ones, and
SIGTERM stops it with exit code 0. ``BuildResult.manifests`` then pins that build by digest.
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
from tests.support.rootfs import can_run, command, unpack  # noqa: E402

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


def test_grpc_image_serves_from_a_read_only_root(tmp_path):
    why = can_run("linux/amd64")
    if why:
        pytest.fail(f"cannot run linux/amd64 here: {why}")
    src = tmp_path / "model_src.py"
    src.write_text(textwrap.dedent(MODEL))
    predict = runpy.run_path(str(src), run_name="__ociforge_model__")["predict"]
    layout = f"oci:{tmp_path / 'out'}:m"
    result = ociforge.build(
        predict, platforms=["linux/amd64"], to=layout, name="affine", metadata=CARD, grpc=True
    )
    assert any(r.startswith("grpcio") for r in result.requirements)
    img = open_source(layout, platform="linux/amd64")
    cfg = img.config.config
    env = cfg.env_dict()
    assert env["OCIFORGE_GRPC"] == "1" and env["GRPC_PORT"] == "8081"
    assert "8081/tcp" in cfg.exposed_ports and "8080/tcp" in cfg.exposed_ports

    root = unpack(img, tmp_path / "rootfs")
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
        expected = np.asarray(
            local.test(predict, SAMPLE, card={"name": "affine", **CARD})["prediction"],
            dtype=np.float32,
        )
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": SAMPLE}]}
        answer = requests.post(f"{url}/v2/models/affine/infer", json=body, timeout=30).json()
        np.testing.assert_array_equal(
            np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 3), expected
        )
        x = np.asarray(SAMPLE, dtype=np.float32)
        for _ in range(4):  # new connections: the kernel spreads them over both workers
            np.testing.assert_array_equal(grpc_infer(grpc_port, x), expected)
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'route="grpc:ModelInfer",status="200"' in metrics
        # SIGTERM to the server's arbiter, as the kubelet does (bwrap itself would just die)
        os.kill(arbiter_pid(proc.pid), signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stdout.read()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    text = result.manifests("kubernetes", repository="registry.example.com/team/affine")
    docs = list(yaml.safe_load_all(text))
    ctr = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert ctr["image"] == f"registry.example.com/team/affine@{result.digest}"
    assert [p["containerPort"] for p in ctr["ports"]] == [8080, 8081]
    assert ctr["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
