"""Exceptions that carry a message a user can act on.

Every error ociforge raises on bad input derives from :class:`OciforgeError`, so the CLI can print
it without a traceback and exit non-zero, and library users can catch one type.
"""


class OciforgeError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class InvalidInput(OciforgeError, ValueError):
    """An argument, path, platform, tag or reference that cannot be used as given."""


class DigestMismatch(OciforgeError):
    """Bytes that do not hash to the digest they were announced with; never kept."""


class NotFound(OciforgeError, LookupError):
    """A blob, manifest, tag or platform that the source does not have."""
