"""Ready-to-apply manifests for a model image: KServe, Seldon Core, or a plain Deployment.

What goes in comes from the image itself (its config and the ``model.json`` it carries): the
ports (8080, and 8081 when built with ``--grpc``), the model card's ``resources`` (``cpu``,
``memory``, ``gpu``; or ``requests``/``limits`` given as Kubernetes spells them) and whether it
is a CUDA image (``build.gpu`` in model.json: ``nvidia.com/gpu``). Every pod:

* runs the image pinned by digest (``name@sha256:...``);
* probes ``/v2/health/ready`` (readiness: 503 until the model has loaded) and ``/v2/health/live``;
  a KServe ``grpc-v2`` predictor, whose one declared port is the gRPC one, uses Kubernetes'
  native ``grpc:`` probes (GA in Kubernetes 1.27; accepted by Knative serving since
  knative/serving#14134) on that port instead: ``grpc.health.v1.Health`` answers ``""`` as
  readiness does and ``liveness`` as liveness does;
* gives ``terminationGracePeriodSeconds`` above the runtime's graceful timeout
  (``OCIFORGE_GRACEFUL_TIMEOUT``, 30 s), so requests in flight finish before the kubelet kills;
* runs as the image's non-root user with ``runAsNonRoot``, ``readOnlyRootFilesystem`` and a
  writable ``/tmp`` (an ``emptyDir``; the runtime writes nothing else), no privilege escalation,
  no capabilities, the runtime's default seccomp profile;
* sets a CPU limit equal to the request: the runtime starts one worker per CPU of its cgroup
  quota, so without a limit it would start one per CPU of the node.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import InvalidInput

KINDS = ("kserve", "seldon", "kubernetes")
PROTOCOLS = ("v1", "v2", "grpc-v2", "seldon")
HTTP_PORT = 8080
GRPC_PORT = 8081
DEFAULT_GRACEFUL_S = 30
GRACE_MARGIN_S = 15  # the kubelet's SIGKILL comes this long after the runtime's own deadline
DEFAULT_USER = 65532
DEFAULT_CPU = "1"
DEFAULT_MEMORY = "1Gi"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
GRPC_LIVE_SERVICE = "liveness"  # the runtime's health service name that follows liveness


@dataclass(frozen=True)
class ImageFacts:
    """What the manifests need to know of an image."""

    image: str  # pinned: name@sha256:...
    card: dict[str, Any] = field(default_factory=dict)
    gpu: str | None = None  # the CUDA variant ("cu121") of a CUDA image, else None
    env: dict[str, str] = field(default_factory=dict)  # the image config's Env
    user: str = ""  # the image config's User

    @property
    def grpc(self) -> bool:
        return self.env.get("OCIFORGE_GRPC", "").strip().lower() in ("1", "true", "yes", "on")

    @property
    def http_port(self) -> int:
        return _int(self.env.get("PORT"), HTTP_PORT)

    @property
    def grpc_port(self) -> int:
        return _int(self.env.get("GRPC_PORT"), GRPC_PORT)

    @property
    def graceful_s(self) -> int:
        return _int(self.env.get("OCIFORGE_GRACEFUL_TIMEOUT"), DEFAULT_GRACEFUL_S)

    @property
    def uid(self) -> int:
        head = self.user.partition(":")[0]
        return int(head) if head.isdigit() and int(head) != 0 else DEFAULT_USER


def _int(raw: str | None, default: int) -> int:
    try:
        return int(float(raw)) if raw else default
    except ValueError:
        return default


def k8s_name(text: str, limit: int = 50) -> str:
    """A DNS-1035 label from a model name: lowercase letters, digits, '-', a letter first."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}".rstrip("-")
    return name[:limit].rstrip("-")


def _quantity(value: Any) -> str:
    return str(value)


def resources(facts: ImageFacts) -> dict[str, dict[str, str]]:
    """requests and limits from the model card, CPU limit = request, a GPU for CUDA images."""
    card_res = dict(facts.card.get("resources") or {})
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for key in ("requests", "limits"):
        given = card_res.pop(key, None)
        if isinstance(given, dict):
            (requests if key == "requests" else limits).update(
                {str(k): _quantity(v) for k, v in given.items()}
            )
    gpu = card_res.pop("gpu", None) or card_res.pop("nvidia.com/gpu", None)
    for key, value in card_res.items():
        if key in ("cpu", "memory", "ephemeral-storage"):
            requests.setdefault(key, _quantity(value))
    requests.setdefault("cpu", DEFAULT_CPU)
    requests.setdefault("memory", DEFAULT_MEMORY)
    limits.setdefault("cpu", requests["cpu"])  # sizes the runtime's workers (cgroup cpu.max)
    limits.setdefault("memory", requests["memory"])
    if gpu is None and facts.gpu and facts.gpu.startswith("cu"):
        gpu = 1
    if gpu is not None:
        limits["nvidia.com/gpu"] = _quantity(gpu)  # extended resources: limits (= requests)
        requests["nvidia.com/gpu"] = _quantity(gpu)
    return {"requests": requests, "limits": limits}


def _probe(action: dict[str, Any], period: int, failures: int) -> dict[str, Any]:
    return {
        **action,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container(
    facts: ImageFacts,
    name: str,
    *,
    grpc_port_name: str = "grpc",
    http_port_name: str = "http",
    only_grpc: bool = False,
    env: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The model server's container: ports, probes, resources, a locked-down security context.

    ``only_grpc``: the gRPC port is the only one declared, and probed over gRPC (a platform that
    takes the container's single port as its serving port, and may probe only that one).
    """
    ports = []
    if not only_grpc:
        ports.append({"name": http_port_name, "containerPort": facts.http_port, "protocol": "TCP"})
    if facts.grpc:
        ports.append({"name": grpc_port_name, "containerPort": facts.grpc_port, "protocol": "TCP"})
    if only_grpc:
        ready = {"grpc": {"port": facts.grpc_port}}
        live = {"grpc": {"port": facts.grpc_port, "service": GRPC_LIVE_SERVICE}}
    else:
        ready = {"httpGet": {"path": READY_PATH, "port": facts.http_port}}
        live = {"httpGet": {"path": LIVE_PATH, "port": facts.http_port}}
    out: dict[str, Any] = {"name": name, "image": facts.image}
    if env:
        out["env"] = env
    out.update(
        {
            "ports": ports,
            "readinessProbe": _probe(ready, 5, 3),
            # liveness answers at once while a large model loads, so no startup probe is needed
            "livenessProbe": _probe(live, 10, 6),
            "resources": resources(facts),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": facts.uid,
                "runAsGroup": facts.uid,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
    )
    return out


def pod_fields(facts: ImageFacts) -> dict[str, Any]:
    """Pod-level fields shared by every kind (merged into a PodSpec)."""
    return {
        "terminationGracePeriodSeconds": facts.graceful_s + GRACE_MARGIN_S,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": facts.uid,
            "runAsGroup": facts.uid,
            "fsGroup": facts.uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "ociforge"}


def _metadata(name: str, namespace: str | None, facts: ImageFacts) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = _labels(name)
    version = facts.card.get("version")
    if version is not None:
        meta["labels"]["app.kubernetes.io/version"] = k8s_name(str(version), 63) or "1"
    return meta


def kserve(
    facts: ImageFacts,
    *,
    name: str,
    namespace: str | None = None,
    protocol: str = "v2",
    weights: str | None = None,
    replicas: int = 1,
) -> list[dict[str, Any]]:
    """A KServe ``InferenceService`` with the image as its custom predictor container.

    KServe reads a custom container's protocol from its ``PROTOCOL`` env (``v1``/``v2``) and
    routes gRPC to the port named ``h2c``: ``grpc-v2`` is v2 on the gRPC port (the image must be
    built with ``--grpc``), the only port declared, so it is probed with ``grpc:`` probes too
    (the HTTP port still serves inside the pod, but is not the one KServe routes to). ``weights`` (an OCI reference) becomes ``STORAGE_URI=oci://...``:
    KServe's storage initializer then puts those files at /mnt/models, where the runtime's
    ``OCIFORGE_WEIGHTS_DIR`` points. (In serverless mode, Knative's ``emptyDir`` feature flag,
    on by default in recent releases, must allow the ``/tmp`` volume.)
    """
    if protocol not in ("v1", "v2", "grpc-v2"):
        raise InvalidInput(f"KServe protocol {protocol!r}: use v1, v2 or grpc-v2")
    grpc = protocol == "grpc-v2"
    if grpc and not facts.grpc:
        raise InvalidInput(
            f"{facts.image} does not serve gRPC: build it with --grpc for protocol grpc-v2"
        )
    env = [{"name": "PROTOCOL", "value": "v1" if protocol == "v1" else "v2"}]
    if weights:
        uri = weights if weights.startswith("oci://") else f"oci://{weights}"
        env.append({"name": "STORAGE_URI", "value": uri})
    pod = pod_fields(facts)
    ctr = container(
        facts,
        "kserve-container",
        grpc_port_name="h2c",
        http_port_name="http1",
        only_grpc=grpc,
        env=env,
    )
    if facts.grpc and not grpc:  # KServe takes the container's single port as the serving port
        ctr["ports"] = [p for p in ctr["ports"] if p["name"] == "http1"]
    predictor: dict[str, Any] = {
        "minReplicas": replicas,
        "terminationGracePeriodSeconds": pod["terminationGracePeriodSeconds"],
        # the container's own securityContext only: Knative (KServe's serverless mode) refuses
        # most pod-level securityContext fields unless a feature flag is on
        "containers": [ctr],
        "volumes": pod["volumes"],
    }
    return [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": _metadata(name, namespace, facts),
            "spec": {"predictor": predictor},
        }
    ]


def seldon(
    facts: ImageFacts,
    *,
    name: str,
    namespace: str | None = None,
    protocol: str = "v2",
    replicas: int = 1,
) -> list[dict[str, Any]]:
    """A Seldon Core v1 ``SeldonDeployment``: one MODEL unit running the image.

    ``protocol``: ``v2`` (Open Inference Protocol, REST, or gRPC with ``grpc-v2``) or ``seldon``
    (``/api/v1.0/predictions``).
    """
    if protocol not in ("v2", "grpc-v2", "seldon"):
        raise InvalidInput(f"Seldon protocol {protocol!r}: use v2, grpc-v2 or seldon")
    grpc = protocol == "grpc-v2"
    if grpc and not facts.grpc:
        raise InvalidInput(
            f"{facts.image} does not serve gRPC: build it with --grpc for protocol grpc-v2"
        )
    unit = "model"
    endpoint = (
        {"type": "GRPC", "grpcPort": facts.grpc_port}
        if grpc
        else {"type": "REST", "httpPort": facts.http_port}
    )
    return [
        {
            "apiVersion": "machinelearning.seldon.io/v1",
            "kind": "SeldonDeployment",
            "metadata": _metadata(name, namespace, facts),
            "spec": {
                "protocol": "seldon" if protocol == "seldon" else "v2",
                "predictors": [
                    {
                        "name": "default",
                        "replicas": replicas,
                        "graph": {
                            "name": unit,
                            "type": "MODEL",
                            "endpoint": endpoint,
                            "children": [],
                        },
                        "componentSpecs": [
                            {"spec": {**pod_fields(facts), "containers": [container(facts, unit)]}}
                        ],
                    }
                ],
            },
        }
    ]


def kubernetes(
    facts: ImageFacts,
    *,
    name: str,
    namespace: str | None = None,
    replicas: int = 1,
    **_: Any,
) -> list[dict[str, Any]]:
    """A ``Deployment`` and a ``Service`` (HTTP 80 -> 8080, gRPC 8081 when built with it)."""
    labels = _labels(name)
    ports = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    if facts.grpc:
        ports.append(
            {
                "name": "grpc",
                "port": facts.grpc_port,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, facts),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {**pod_fields(facts), "containers": [container(facts, "model")]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, facts),
        "spec": {"selector": labels, "ports": ports},
    }
    return [deployment, service]


def manifests(
    facts: ImageFacts,
    kind: str,
    *,
    name: str | None = None,
    namespace: str | None = None,
    protocol: str | None = None,
    weights: str | None = None,
    replicas: int = 1,
) -> list[dict[str, Any]]:
    """The documents for ``kind`` (``kserve``, ``seldon`` or ``kubernetes``)."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown deployment kind {kind!r}: use {', '.join(KINDS)}")
    if replicas < 0:
        raise InvalidInput("replicas must be >= 0")
    if weights and kind != "kserve":
        raise InvalidInput("--weights is for kserve (its storage initializer fetches them)")
    name = k8s_name(name or str(facts.card.get("name") or "model"))
    if kind == "kserve":
        return kserve(
            facts,
            name=name,
            namespace=namespace,
            protocol=protocol or "v2",
            weights=weights,
            replicas=replicas,
        )
    if kind == "seldon":
        return seldon(
            facts, name=name, namespace=namespace, protocol=protocol or "v2", replicas=replicas
        )
    if protocol not in (None, "v2", "grpc-v2"):
        raise InvalidInput("a plain Deployment serves every protocol the image has: omit it")
    return kubernetes(facts, name=name, namespace=namespace, replicas=replicas)


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """The documents as YAML, ``---`` between them; same input, same bytes."""

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return "---\n".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False) for doc in docs
    )


def to_json(docs: list[dict[str, Any]]) -> str:
    return json.dumps(docs if len(docs) > 1 else docs[0], indent=2) + "\n"
