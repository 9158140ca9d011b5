"""The model server that runs inside every ociforge image."""

__version__ = "0.1.0"
