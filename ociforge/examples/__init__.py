"""Bundled example models (used by ``ociforge example`` and the benchmarks)."""
