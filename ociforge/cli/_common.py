"""Argument helpers shared by subcommands (not a subcommand itself: the name starts with '_')."""

from __future__ import annotations

import json
import shlex

from ..errors import InvalidInput


def key_values(items: list[str] | None, what: str) -> dict[str, str]:
    """``["K=V", ...]`` into a dict, with an error naming the flag for a malformed item."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def command_line(text: str | None, what: str) -> list[str] | None:
    """A JSON array (``'["python3", "-m", "x"]'``) or a shell-quoted string, as a list."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError as e:
            raise InvalidInput(f"{what}: invalid JSON array: {e}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"{what}: expected a JSON array of strings")
        return value
    try:
        return shlex.split(text)
    except ValueError as e:
        raise InvalidInput(f"{what}: {e}") from None


def add_registry_options(p) -> None:
    """Options every command that talks to a registry accepts."""
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP / unverified TLS for non-loopback registries",
    )
    p.add_argument(
        "--ca-bundle", metavar="FILE", help="CA certificates to verify the registry's TLS with"
    )


def add_push_options(p) -> None:
    """Options of the commands that push to a registry: upload sizes, quiet, and the registry's."""
    p.add_argument(
        "--chunk-size",
        type=int,
        metavar="MIB",
        help="largest upload request in MiB (bigger blobs go in resumable chunks)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    add_registry_options(p)


def registry_kwargs(args) -> dict:
    out = {}
    if getattr(args, "insecure", False):
        out["insecure"] = True
    if getattr(args, "ca_bundle", None):
        out["ca_bundle"] = args.ca_bundle
    return out


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
