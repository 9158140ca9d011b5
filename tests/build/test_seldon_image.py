"""A model packaged the Seldon-wrapper way moves over unchanged: ``ociforge build MyModel.py
--folder .`` (the class named like the file, the folder's weights shipped beside it) gives an
image whose own entrypoint (under bubblewrap) answers Seldon Core's ``SeldonClient`` as the
wrapper would, with ``PREDICTIVE_UNIT_PARAMETERS`` passed to the class and ``load()`` reading the
shipped weights from the working folder; the same image answers ``tritonclient.http`` (binary
tensors) and KServe v1."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import requests

from ociforge.cli.build import folder_files, load_model
from ociforge.transports.transport import open_source
from tests.build.conftest import serving
from tests.support.peers import peer_python, run_peer

MODEL = textwrap.dedent("""
    import json

    import numpy as np


    class MyModel:
        def __init__(self, scale=1.0, label="none"):
            self.scale = scale
            self.label = label

        def load(self):
            with open("weights/w.json") as f:
                self.w = np.array(json.load(f)["w"], dtype=float)

        def predict(self, X, features_names=None):
            return np.asarray(X, dtype=float) @ self.w * self.scale

        def tags(self):
            return {"label": self.label}
""")

SCRIPT = r"""
import json, sys
import numpy as np
from seldon_core.seldon_client import SeldonClient
from seldon_core.utils import seldon_message_to_json
a = json.loads(sys.argv[1])
sc = SeldonClient(microservice_endpoint=a["endpoint"])
r = sc.microservice(transport="rest", method="predict", data=np.array(a["x"]), payload_type="ndarray")
print(json.dumps({"success": r.success, "msg": r.msg, "response": seldon_message_to_json(r.response)}))
"""


TRITON = r"""
import json, sys
import numpy as np
import tritonclient.http as httpclient
a = json.loads(sys.argv[1])
c = httpclient.InferenceServerClient(a["url"])
x = np.array(a["x"], dtype=np.float32)
i = httpclient.InferInput("x", list(x.shape), "FP32")
i.set_data_from_numpy(x)  # binary, the client's default
r = c.infer(a["model"], [i])
print(json.dumps({"y": r.as_numpy("output-0").tolist(), "binary": "data" not in r.get_response()["outputs"][0]}))
"""


def _project(tmp_path):
    proj = tmp_path / "proj"
    (proj / "weights").mkdir(parents=True)
    (proj / "weights" / "w.json").write_text(json.dumps({"w": [1.0, 2.0, -1.0]}))
    (proj / ".env").write_text("SECRET=1\n")
    (proj / "weights" / ".cache").write_text("x")
    (proj / "MyModel.py").write_text(MODEL)
    (proj / "requirements.txt").write_text(f"numpy=={np.__version__}\n")
    return proj


def test_folder_and_default_class(tmp_path):
    proj = _project(tmp_path)
    model, path = load_model(str(proj / "MyModel.py"))
    assert model.__name__ == "MyModel" and path.name == "MyModel.py"
    files = folder_files(proj, proj / "MyModel.py")
    assert files == {
        "requirements.txt": str(proj / "requirements.txt"),
        "weights/w.json": str(proj / "weights" / "w.json"),
    }


def test_seldon_model_image_serves_seldon_client(tmp_path, cli):
    proj = _project(tmp_path)
    out = cli(
        "build", "MyModel.py", "--folder", ".", "-r", "requirements.txt", "--name", "mymodel",
        "--json", "--to", f"oci:{tmp_path / 'out'}:v1", cwd=proj,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    img = open_source(f"oci:{tmp_path / 'out'}:v1").select("linux/amd64")
    params = [
        {"name": "scale", "value": "2", "type": "FLOAT"},
        {"name": "label", "value": "img", "type": "STRING"},
    ]
    x = [[1.0, 1.0, 1.0], [0.5, 0.0, 2.0]]
    expected = (np.asarray(x) @ np.array([1.0, 2.0, -1.0]) * 2).tolist()
    env = {"PREDICTIVE_UNIT_PARAMETERS": json.dumps(params)}
    with serving(img, tmp_path / "rootfs", env=env) as url:
        got = run_peer(
            peer_python("seldon-core"),
            SCRIPT,
            {"endpoint": url.removeprefix("http://"), "x": x},
        )
        assert got["success"], got
        assert got["response"]["data"]["ndarray"] == expected
        assert got["response"]["meta"]["tags"] == {"label": "img"}
        r = requests.post(f"{url}/api/v1.0/predictions", json={"strData": 5}, timeout=30)
        assert r.status_code == 400 and r.json()["status"]["reason"] == "MICROSERVICE_BAD_DATA"
        r = requests.post(f"{url}/api/v1.0/predictions", json={"data": {"ndarray": x}}, timeout=30)
        assert r.json()["data"]["ndarray"] == expected
        # the same image answers tritonclient (binary tensors) and KServe v1
        got = run_peer(
            peer_python("tritonclient"),
            TRITON,
            {"url": url.removeprefix("http://"), "model": "mymodel", "x": x},
        )
        assert got == {"y": expected, "binary": True}
        r = requests.post(f"{url}/v1/models/mymodel:predict", json={"instances": x}, timeout=30)
        assert r.json() == {"predictions": expected}
