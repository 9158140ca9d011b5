"""Where ociforge keeps what it downloads and builds: one folder, shared by every part (blobs,
wheels, ``.deb`` files, memos), so that copying it carries everything an offline build needs."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$OCIFORGE_CACHE``, else ``$XDG_CACHE_HOME/ociforge``, else ``~/.cache/ociforge``."""
    env = os.environ.get("OCIFORGE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "ociforge" if xdg else Path.home() / ".cache" / "ociforge"
