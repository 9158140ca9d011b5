"""ociforge: turn a trained model into a multi-arch OCI image, with no Dockerfile and no daemon."""

__version__ = "0.1.0"
