"""The model server that runs inside every ociforge image."""

import os

__version__ = "0.1.0"

# Where a model finds weights shipped apart from its image (a modelcar or ModelPack artifact,
# mounted or downloaded there): KServe mounts a storage URI's files at /mnt/models.
WEIGHTS_ENV = "OCIFORGE_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = "/mnt/models"


def weights_dir() -> str:
    """``$OCIFORGE_WEIGHTS_DIR``, else ``/mnt/models``: where the model's ``load()`` reads its
    weights. The runtime sets the variable (to the default when unset) before ``load()`` runs."""
    return os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS_DIR
