"""Where images come from and go to: ``oci:`` layouts, ``oci-archive:``,
``docker-archive:``, ``docker-daemon:`` and registries (``registry/``), each reading and writing
any :class:`~ociforge.oci.image.Image` or :class:`~ociforge.oci.image.ImageIndex`."""
