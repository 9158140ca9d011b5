"""The registry cache: layer memo entries published next to the image, so a fresh machine finds
what an earlier build made (see :mod:`ociforge.cache.memo`)."""
