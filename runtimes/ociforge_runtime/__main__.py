"""``python3 -m ociforge_runtime``: the entrypoint of every ociforge image."""

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
