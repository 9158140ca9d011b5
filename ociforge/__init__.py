"""ociforge: turn a trained model into a multi-arch OCI image, with no Dockerfile and no daemon.

import ociforge
ociforge.test(predict, sample)                      # the server's path, run locally
result = ociforge.build(predict, platforms=["linux/amd64", "linux/arm64"],
                        requirements=["scikit-learn==1.5.2"], to="oci:out:iris")
ociforge.weights(["./llama"], to="registry.example.com/team/llama:1")  # a KServe modelcar

The package is laid out the way a model's bytes go: ``model`` (the model in) → ``python`` (its
wheels for each target) and ``bases`` (the images under it) → ``oci`` (layers, manifests, images)
→ ``builder`` (the build, step by step) → ``transports`` (where images go) → ``airgap`` (closed
networks) → ``cli``. Lower parts never import higher ones.
"""

from typing import TYPE_CHECKING

from .errors import BuildError
from .version import __version__

if TYPE_CHECKING:
    from .artifacts.build import weights
    from .builder.build import BuildResult, build, test, test_batch

__all__ = ["build", "test", "test_batch", "weights", "BuildResult", "BuildError", "__version__"]


def __getattr__(name: str):
    """The public API, loaded on first use: the build imports every part (~0.2 s), which a cold
    ``ociforge inspect`` or ``ociforge copy`` never needs."""
    if name in ("build", "test", "test_batch", "BuildResult"):
        from .builder import build as _build

        value = getattr(_build, name)
        globals()[name] = value
        return value
    if name == "weights":
        from .artifacts.build import weights

        globals()[name] = weights
        return weights
    raise AttributeError(f"module 'ociforge' has no attribute {name!r}")
