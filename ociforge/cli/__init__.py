"""The ``ociforge`` command line: one module per subcommand in this package.

Each module defines ``register(subparsers)`` (adding its parser, with ``func`` set as default) so
commands are added without touching this file. Errors derived from
:class:`~ociforge.errors.OciforgeError` print as one line on stderr with exit status 2; nothing
else ever prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from ..errors import OciforgeError
from ..version import __version__


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone when it names one: a command's module
    imports what it runs (``inspect``'s took 0.19 s of CPU alone, 0.37 s with all the others)."""
    parser = argparse.ArgumentParser(
        prog="ociforge",
        description="Build, inspect and move OCI images of ML models, with no Docker daemon.",
    )
    parser.add_argument("--version", action="version", version=f"ociforge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in [command] if command in names else names:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command ``argv`` names, past the options that take no value (``-v``); None when an
    option comes first (``--help`` and ``--version`` list or name every command)."""
    for arg in argv:
        if arg in ("-v", "--verbose"):
            continue
        return None if arg.startswith("-") else arg
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_command(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OciforgeError as e:
        print(f"ociforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ociforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
