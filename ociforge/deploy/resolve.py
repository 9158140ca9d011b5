"""An image, read through ociforge's transports, as the facts its manifests need.

The reference is pinned by digest (a cluster then runs exactly what was built and tested): a
registry reference is resolved to its index or manifest digest; a local transport (``oci:``,
``oci-archive:``...) gives its digest and ``name`` says the repository it was pushed to. The card
and CUDA variant come from the ``model.json`` inside the image (one of its top layers), the
ports and the gRPC switch from its config.
"""

from __future__ import annotations

import json
import tarfile
from typing import Any

from ..errors import InvalidInput, OciforgeError
from ..oci.image import Image, ImageIndex
from ..oci.layer import decompressor
from ..oci.reference import Reference
from ..transports.spec import parse as parse_spec
from ..transports.transport import open_source
from .manifests import ImageFacts

MODEL_JSON = "opt/ociforge/model/model.json"
LAYERS_SEARCHED = 8  # the model layer is among the image's own, at the top


def pick_image(obj: Image | ImageIndex) -> Image:
    """The image whose config and model describe an index: linux/amd64 when there is one."""
    if isinstance(obj, Image):
        return obj
    images = [img for _d, img in obj.images()]
    if not images:
        raise InvalidInput(f"index {obj.digest} holds no image")
    for img in images:
        if str(img.platform).startswith("linux/amd64"):
            return img
    return images[0]


def model_json(img: Image) -> dict[str, Any] | None:
    """The ``model.json`` an ociforge image carries, read from its top layers; None if absent."""
    for desc in list(reversed(img.layers))[:LAYERS_SEARCHED]:
        with img.open_layer(desc) as raw:
            stream = decompressor(raw, desc.media_type)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member.name.lstrip("./") == MODEL_JSON and member.isfile():
                        fh = tar.extractfile(member)
                        return json.loads(fh.read()) if fh is not None else None
    return None


def facts_of(obj: Image | ImageIndex, pinned: str) -> ImageFacts:
    img = pick_image(obj)
    run = img.config.config
    env = dict(item.partition("=")[::2] for item in run.env)
    manifest = model_json(img) or {}
    gpu = (manifest.get("build") or {}).get("gpu")
    return ImageFacts(
        image=pinned,
        card=dict(manifest.get("card") or {}),
        gpu=str(gpu) if gpu else None,
        env=env,
        user=run.user,
    )


def resolve(source: str, *, name: str | None = None, **registry_opts: Any) -> ImageFacts:
    """Read ``source`` (any transport) and pin it by digest.

    ``name`` (``REGISTRY/REPO``) is where a local image is (or will be) pushed; for a registry
    reference it replaces the repository named in the manifests.
    """
    spec = parse_spec(source)
    obj = open_source(spec, **registry_opts)
    if spec.kind == "docker":
        ref = Reference.parse(spec.path)
        repo = name or ref.name
        if ref.digest and ref.digest != obj.digest:
            raise OciforgeError(f"{source} answered digest {obj.digest}, not {ref.digest}")
    else:
        if not name:
            raise InvalidInput(
                f"{source} is a local image: give --name REGISTRY/REPO, where the cluster pulls it"
            )
        repo = name
    repo = Reference.parse(repo).name  # normalized; any tag or digest in name is dropped
    return facts_of(obj, f"{repo}@{obj.digest}")
