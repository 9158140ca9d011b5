"""``ociforge deploy``: manifests for KServe, Seldon Core and plain Kubernetes.

Validated by the peers a cluster would use, each in its own venv (tests/support/peers.py):
``kubernetes-validate`` (strict, against Kubernetes' own schemas) for Deployment, Service and the
pod specs inside the InferenceService and SeldonDeployment, and the ``kserve`` package's models
(``V1beta1InferenceService``, deserialized and serialized back unchanged) for InferenceService.
The image is a real OCI layout carrying a model.json, resolved through ociforge's transports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ociforge.cli import main as cli_main  # noqa: E402
from ociforge.deploy import ImageFacts, manifests, resolve, to_yaml  # noqa: E402
from ociforge.errors import InvalidInput  # noqa: E402
from ociforge.oci.blobstore import BlobStore  # noqa: E402
from ociforge.oci.image import ConfigChanges, append, make_index, store_source  # noqa: E402
from ociforge.oci.layer import Entry, write_layer  # noqa: E402
from ociforge.oci.platform import Platform  # noqa: E402
from ociforge.transports.transport import write_to  # noqa: E402
from tests.support.peers import peer_python, run_peer  # noqa: E402

K8S_VERSION = "1.33.0"
VALIDATE = ("kubernetes-validate", ["kubernetes-validate==1.34.0"], "kubernetes_validate")
KSERVE = ("kserve-0.16", ["kserve==0.16.0", "kubernetes==31.0.0"], "kserve")
REPO = "registry.example.com/team/iris"

CARD = {
    "name": "Iris_Classifier",
    "version": "1.2",
    "resources": {"cpu": "2", "memory": "1Gi"},
    "inputs": [],
    "outputs": [],
}


@pytest.fixture(scope="module")
def validate_python() -> Path:
    return peer_python(*VALIDATE)


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    return peer_python(*KSERVE)


def make_image(tmp: Path, *, grpc: bool, gpu: str | None = "cpu", card=CARD) -> str:
    """An OCI layout holding an image shaped like ociforge's: config env, model.json in a layer."""
    store = BlobStore(tmp / "store")
    manifest = {"format": 1, "kind": "function", "card": card, "build": {"gpu": gpu}}
    entries = [
        Entry.file("/opt/ociforge/model/model.json", json.dumps(manifest).encode(), 0o644),
        Entry.file("/opt/ociforge/model/model.pkl", b"x", 0o644),
    ]
    layer = write_layer(entries, store, "gzip")
    env = {"PORT": "8080", "OCIFORGE_MODEL_DIR": "/opt/ociforge/model"}
    ports = ["8080/tcp"]
    if grpc:
        env.update({"OCIFORGE_GRPC": "1", "GRPC_PORT": "8081"})
        ports.append("8081/tcp")
    images = [
        append(
            None,
            [layer],
            store_source(store),
            platform=Platform.parse(plat),
            changes=ConfigChanges(
                entrypoint=["/usr/bin/python3", "-m", "ociforge_runtime"],
                env=env,
                user="65532:65532",
                exposed_ports=ports,
            ),
            history=["model"],
            created=0,
            store=store,
        )
        for plat in ("linux/amd64", "linux/arm64")
    ]
    spec = f"oci:{tmp / 'layout'}:1"
    write_to(make_index(images), spec)
    return spec


def validate_k8s(py: Path, docs: list[dict], tmp: Path) -> None:
    """Strict validation by kubernetes-validate against Kubernetes' schemas; fails with its output."""
    path = tmp / f"docs-{len(list(tmp.glob('docs-*')))}.yaml"
    path.write_text(to_yaml(docs))
    exe = py.parent / "kubernetes-validate"
    r = subprocess.run(
        [str(exe), "--strict", "-k", K8S_VERSION, str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{path.read_text()}"
    assert "INFO" in r.stdout or "valid" in r.stdout.lower(), r.stdout


def pod_of(spec: dict, name: str = "check") -> dict:
    """A Pod around the pod fields of an InferenceService predictor or Seldon componentSpec."""
    keep = ("containers", "volumes", "securityContext", "terminationGracePeriodSeconds")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {k: spec[k] for k in keep if k in spec},
    }


def the_container(docs: list[dict]) -> dict:
    doc = docs[0]
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]["containers"][0]
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]["containers"][0]
    return doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]


def pod_spec(docs: list[dict]) -> dict:
    doc = docs[0]
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]
    return doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> str:
    return make_image(tmp_path_factory.mktemp("img"), grpc=True)


@pytest.fixture(scope="module")
def facts(layout) -> ImageFacts:
    return resolve(layout, name=REPO + ":ignored-tag")


def test_resolve_pins_the_digest_and_reads_the_image(facts, layout):
    from ociforge.transports.transport import open_source

    digest = open_source(layout).digest
    assert facts.image == f"{REPO}@{digest}"
    assert facts.card["name"] == "Iris_Classifier" and facts.card["resources"]["cpu"] == "2"
    assert facts.grpc and facts.grpc_port == 8081 and facts.http_port == 8080
    assert facts.uid == 65532
    with pytest.raises(InvalidInput, match="--name"):
        resolve(layout)


@pytest.mark.parametrize("kind", ["kubernetes", "kserve", "seldon"])
def test_common_pod_settings(facts, kind):
    docs = manifests(facts, kind)
    ctr, pod = the_container(docs), pod_spec(docs)
    assert ctr["image"] == facts.image and "@sha256:" in ctr["image"]
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert pod["terminationGracePeriodSeconds"] > 30  # above OCIFORGE_GRACEFUL_TIMEOUT
    sc = ctr["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert ctr["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert ctr["resources"] == {
        "requests": {"cpu": "2", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    assert docs[0]["metadata"]["name"] == "iris-classifier"
    assert to_yaml(docs) == to_yaml(manifests(facts, kind))  # deterministic


def test_kubernetes_deployment_and_service_validate(facts, validate_python, tmp_path):
    docs = manifests(facts, "kubernetes", namespace="models", replicas=2)
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    ports = {p["name"]: p for p in docs[1]["spec"]["ports"]}
    assert ports["http"]["targetPort"] == "http" and ports["grpc"]["port"] == 8081
    assert docs[0]["spec"]["replicas"] == 2
    validate_k8s(validate_python, docs, tmp_path)


def test_cuda_image_asks_for_a_gpu(tmp_path, validate_python):
    card = {**CARD, "resources": {"memory": "8Gi"}}
    spec = make_image(tmp_path, grpc=False, gpu="cu121", card=card)
    facts = resolve(spec, name=REPO)
    docs = manifests(facts, "kubernetes")
    res = the_container(docs)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "1" and res["requests"]["memory"] == "8Gi"
    assert [p["name"] for p in the_container(docs)["ports"]] == ["http"]  # no gRPC built in
    validate_k8s(validate_python, docs, tmp_path)
    with pytest.raises(InvalidInput, match="--grpc"):
        manifests(facts, "kserve", protocol="grpc-v2")


KSERVE_CHECK = r"""
import json, sys
import kserve.models
import kubernetes.client.models as core
from kserve.api_client import ApiClient
from kserve import V1beta1InferenceService

# kserve's client resolves nested type names in kserve.models only; the core types it refers to
# (V1ObjectMeta, V1Container...) are the kubernetes client's
for name in dir(core):
    if name.startswith("V1") and not hasattr(kserve.models, name):
        setattr(kserve.models, name, getattr(core, name))

docs = json.loads(sys.argv[1])
out = []
client = ApiClient()
for doc in docs:
    class Response:
        data = json.dumps(doc)
    obj = client.deserialize(Response(), V1beta1InferenceService)
    back = client.sanitize_for_serialization(obj)
    out.append({"same": back == doc, "back": back,
                "container": obj.spec.predictor.containers[0].name,
                "type": type(obj.spec.predictor).__name__})
print(json.dumps(out))
"""


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2"])
def test_kserve_inference_service(facts, protocol, kserve_python, validate_python, tmp_path):
    weights = "registry.example.com/team/iris-weights:1" if protocol == "v2" else None
    docs = manifests(facts, "kserve", protocol=protocol, weights=weights)
    assert docs[0]["apiVersion"] == "serving.kserve.io/v1beta1"
    ctr = the_container(docs)
    env = {e["name"]: e["value"] for e in ctr["env"]}
    assert env["PROTOCOL"] == ("v1" if protocol == "v1" else "v2")
    if protocol == "grpc-v2":
        assert ctr["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
        # the one declared port is probed, over gRPC (grpc.health.v1.Health in the runtime)
        assert ctr["readinessProbe"]["grpc"] == {"port": 8081}
        assert ctr["livenessProbe"]["grpc"] == {"port": 8081, "service": "liveness"}
        assert "httpGet" not in ctr["readinessProbe"] and "httpGet" not in ctr["livenessProbe"]
    else:
        assert ctr["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
        assert ctr["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    if weights:
        assert env["STORAGE_URI"] == f"oci://{weights}"
    [checked] = run_peer(kserve_python, KSERVE_CHECK, docs)
    assert checked["type"] == "V1beta1PredictorSpec" and checked["container"] == "kserve-container"
    assert checked["same"], (checked["back"], docs[0])  # nothing unknown to KServe's models
    validate_k8s(validate_python, [pod_of(pod_spec(docs))], tmp_path)


def test_seldon_deployment(facts, validate_python, tmp_path):
    docs = manifests(facts, "seldon", protocol="grpc-v2", namespace="seldon")
    sd = docs[0]
    assert sd["apiVersion"] == "machinelearning.seldon.io/v1" and sd["kind"] == "SeldonDeployment"
    predictor = sd["spec"]["predictors"][0]
    assert sd["spec"]["protocol"] == "v2"
    assert predictor["graph"]["endpoint"] == {"type": "GRPC", "grpcPort": 8081}
    assert predictor["graph"]["name"] == the_container(docs)["name"]  # the unit runs this container
    rest = manifests(facts, "seldon", protocol="seldon")[0]
    assert rest["spec"]["protocol"] == "seldon"
    assert rest["spec"]["predictors"][0]["graph"]["endpoint"] == {"type": "REST", "httpPort": 8080}
    validate_k8s(validate_python, [pod_of(pod_spec(docs))], tmp_path)


def test_cli_prints_yaml(layout, capsys):
    assert cli_main(["deploy", "kserve", layout, "--name", REPO, "--protocol", "grpc-v2"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs[0]["kind"] == "InferenceService"
    assert docs[0]["spec"]["predictor"]["containers"][0]["image"].startswith(REPO + "@sha256:")
    assert cli_main(["deploy", "kubernetes", layout]) == 2  # a local image needs --name
    assert "--name" in capsys.readouterr().err


def test_weights_only_for_kserve(facts):
    with pytest.raises(InvalidInput, match="kserve"):
        manifests(facts, "kubernetes", weights="r/w:1")


def test_registry_reference_is_pinned_by_digest(layout, tmp_path, capsys):
    """A tag in a real registry (the distribution API through ociforge's transports) resolves to
    the digest it points at; a reference already pinned must match what the registry serves."""
    from ociforge.oci.reference import Reference
    from ociforge.transports.transport import open_source
    from tests.support.registry import RegistryServer

    with RegistryServer(tmp_path / "reg", mode="http") as reg:
        ref = reg.ref("models/iris:1")
        written = write_to(open_source(layout), ref)
        facts = resolve(ref)
        name = Reference.parse(ref).name
        assert facts.image == f"{name}@{written.digest}"
        assert facts.card["name"] == "Iris_Classifier" and facts.grpc
        assert resolve(f"{name}@{written.digest}").image == facts.image
        assert cli_main(["deploy", "seldon", ref, "--protocol", "seldon"]) == 0
        doc = yaml.safe_load(capsys.readouterr().out)
        spec = doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]
        assert spec["containers"][0]["image"] == facts.image


def test_build_cli_has_the_grpc_flag():
    from ociforge.cli import build_parser

    args = build_parser().parse_args(["build", "model.py:predict", "--grpc"])
    assert args.grpc is True
    assert build_parser().parse_args(["build", "model.py:predict"]).grpc is False
