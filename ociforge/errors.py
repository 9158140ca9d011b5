"""Exceptions that carry a message a user can act on.

Every error ociforge raises on bad input derives from :class:`OciforgeError`, so the CLI can print
it without a traceback and exit non-zero, and library users can catch one type.
"""

import shlex
from collections.abc import Sequence

from .cachedir import default_cache_dir


class OciforgeError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class InvalidInput(OciforgeError, ValueError):
    """An argument, path, platform, tag or reference that cannot be used as given."""


class DigestMismatch(OciforgeError):
    """Bytes that do not hash to the digest they were announced with; never kept."""


class NotFound(OciforgeError, LookupError):
    """A blob, manifest, tag or platform that the source does not have."""


class BuildError(OciforgeError):
    """The model cannot be built into an image (the message says what to change)."""


class MissingInputs(OciforgeError):
    """What an offline build needs that the local caches do not hold, and how to fetch it.

    It lives here, below every part, because each part finds its own missing inputs: the bases
    their ``.deb`` files and locks, the build its wheels and lock.
    """

    def __init__(self, items: Sequence[str], command: str) -> None:
        self.items = list(dict.fromkeys(items))
        self.command = command
        cache = default_cache_dir()
        lines = "\n".join(f"  - {item}" for item in self.items)
        super().__init__(
            f"offline: {len(self.items)} input(s) missing from the local caches ({cache}):\n"
            f"{lines}\n"
            f"fetch them on a connected machine with:\n"
            f"  OCIFORGE_CACHE={shlex.quote(str(cache))} {command}\n"
            f"then copy that folder here (or carry everything in an `ociforge bundle`)"
        )


class SignatureError(OciforgeError):
    """A signature that is missing, does not verify with the key given, or signs something else;
    also a key that cannot be used (not a key, wrong password)."""
