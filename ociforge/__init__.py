"""ociforge: turn a trained model into a multi-arch OCI image, with no Dockerfile and no daemon.

import ociforge
ociforge.test(predict, sample)                      # the server's path, run locally
result = ociforge.build(predict, platforms=["linux/amd64", "linux/arm64"],
                        requirements=["scikit-learn==1.5.2"], to="oci:out:iris")
"""

__version__ = "0.1.0"

from .build import BuildError, BuildResult, build, test, test_batch  # noqa: E402

__all__ = ["build", "test", "test_batch", "BuildResult", "BuildError", "__version__"]
