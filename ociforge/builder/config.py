"""What a model image says about itself: labels and annotations from the model card, and the
config that starts the runtime (entrypoint, environment, user, port)."""

from __future__ import annotations

from collections.abc import Mapping

from ..oci.image import ConfigChanges, Image
from ..python.target import Target
from ..version import __version__
from .layers import search_path
from .paths import ANNOTATION_PREFIX, APP_DIR, MODEL_DIR, PORT, USER

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CUDA_LABEL = "dev.ociforge.cuda"  # the CUDA variant of a CUDA image (cu121 ...)


def labels(card: dict, name: str, version: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The image's labels: OCI's standard ones from the card, ociforge's version, the user's."""
    out = {
        f"{ANNOTATION_PREFIX}title": name,
        f"{ANNOTATION_PREFIX}version": version,
        "dev.ociforge.version": __version__,
    }
    if card.get("description"):
        out[f"{ANNOTATION_PREFIX}description"] = str(card["description"])[:512]
    if card.get("license"):
        out[f"{ANNOTATION_PREFIX}licenses"] = str(card["license"])
    if card.get("authors"):
        authors = card["authors"]
        out[f"{ANNOTATION_PREFIX}authors"] = (
            ", ".join(authors) if isinstance(authors, list) else str(authors)
        )
    for key in ("source", "revision", "url", "documentation", "vendor"):
        if card.get(key):
            out[f"{ANNOTATION_PREFIX}{key}"] = str(card[key])
    out.update(extra or {})
    return out


def annotations(labels_: Mapping[str, str]) -> dict[str, str]:
    """The labels that are also OCI annotations (on each manifest and on the index)."""
    return {k: v for k, v in labels_.items() if k.startswith(ANNOTATION_PREFIX)}


def runtime_config(base: Image, target: Target, labels_: dict[str, str]) -> ConfigChanges:
    """The config that runs ``python3 -m ociforge_runtime`` on the base's Python, as a non-root
    user, with the image's modules on its path."""
    env = {
        "PYTHONPATH": ":".join(search_path(target)),
        "PATH": f"{target.bin_dir}:" + base.config.config.env_dict().get("PATH", DEFAULT_PATH),
        "PORT": str(PORT),
        "OCIFORGE_MODEL_DIR": MODEL_DIR,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if target.variant.startswith("cu"):  # what the NVIDIA container toolkit reads; CPU: nothing
        env |= {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
        labels_ = {**labels_, CUDA_LABEL: target.variant}
    return ConfigChanges(
        entrypoint=[target.interpreter, "-m", "ociforge_runtime"],
        cmd=[],
        env=env,
        working_dir=APP_DIR,
        user=USER,
        exposed_ports=[f"{PORT}/tcp"],
        labels=labels_,
        stop_signal="SIGTERM",
    )
