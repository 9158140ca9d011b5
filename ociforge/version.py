"""ociforge's version, in a module of its own so that any part can name it (layer memo keys, image
labels, the CLI) without importing the package's public API, which sits above every part."""

__version__ = "0.1.0"
