"""``ociforge deploy kserve|seldon|kubernetes IMAGE``: ready-to-apply manifests for an image."""

from __future__ import annotations

import sys

from ..deploy import KINDS, PROTOCOLS, manifests, resolve, to_json, to_yaml
from ._common import add_registry_options, registry_kwargs


def register(sub) -> None:
    p = sub.add_parser(
        "deploy",
        help="print Kubernetes manifests (KServe, Seldon Core, Deployment+Service) for an image",
        description=(
            "Print ready-to-apply YAML for a model image: a KServe InferenceService, a Seldon "
            "Core SeldonDeployment, or a Deployment and a Service. The image is pinned by digest; "
            "ports, resources (the model card's) and gRPC come from the image. Pods run as "
            "non-root with a read-only root filesystem and a writable /tmp, probe "
            "/v2/health/ready and /v2/health/live, and get a termination grace period above the "
            "runtime's graceful timeout. Apply with: ociforge deploy ... | kubectl apply -f -"
        ),
    )
    p.add_argument("kind", choices=KINDS, help="what to deploy on")
    p.add_argument(
        "image",
        metavar="IMAGE",
        help="a registry reference (tag or @sha256:), or oci:DIR[:TAG] etc. with --name",
    )
    p.add_argument(
        "--name",
        dest="repository",
        metavar="REGISTRY/REPO",
        help="the repository the cluster pulls from (required for a local image)",
    )
    p.add_argument("--resource-name", help="metadata.name (default: from the model card's name)")
    p.add_argument("--namespace", help="metadata.namespace")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="kserve: v1, v2 (default) or grpc-v2; seldon: v2 (default), grpc-v2 or seldon",
    )
    p.add_argument(
        "--weights",
        metavar="REF",
        help="kserve: weights artifact (from ociforge weights) mounted at /mnt/models "
        "(STORAGE_URI=oci://REF)",
    )
    p.add_argument("--replicas", type=int, default=1, help="replicas (kserve: minReplicas)")
    p.add_argument("--json", action="store_true", help="JSON instead of YAML")
    add_registry_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    facts = resolve(args.image, name=args.repository, **registry_kwargs(args))
    if not facts.card:
        print(
            f"ociforge deploy: warning: {args.image} carries no ociforge model.json; "
            "default resources are used",
            file=sys.stderr,
        )
    docs = manifests(
        facts,
        args.kind,
        name=args.resource_name,
        namespace=args.namespace,
        protocol=args.protocol,
        weights=args.weights,
        replicas=args.replicas,
    )
    sys.stdout.write(to_json(docs) if args.json else to_yaml(docs))
    return 0
