"""Transport strings, named the way skopeo users already write them, and what writing one gives.

``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``, ``docker-archive:FILE[:NAME[:TAG]]``,
``docker-daemon:NAME[:TAG]`` and registry references (``docker://REF`` or a bare ``REF``).
Every transport imports this module; :mod:`ociforge.transports.transport` dispatches on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .layout import validate_tag

KINDS = ("oci", "oci-archive", "docker-archive", "docker-daemon", "docker")


@dataclass(frozen=True)
class Spec:
    """A parsed transport string: ``kind`` and its ``path`` or registry ``ref``, plus a tag/name."""

    kind: str
    path: str = ""
    tag: str | None = None

    def __str__(self) -> str:
        if self.kind == "docker":
            return f"docker://{self.path}"
        if self.kind == "docker-daemon":
            return f"docker-daemon:{self.tag}"
        return f"{self.kind}:{self.path}" + (f":{self.tag}" if self.tag else "")


def parse(spec: str) -> Spec:
    """Split a transport string; a string with no known prefix is a registry reference."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInput(f"empty image location {spec!r}")
    spec = spec.strip()
    if spec.startswith("docker://"):
        return Spec("docker", spec[len("docker://") :])
    head, sep, rest = spec.partition(":")
    if sep and head in ("oci", "oci-archive"):
        if not rest:
            raise InvalidInput(f"{spec!r}: {head}: needs a path, like {head}:./out[:TAG]")
        path, tag = rest, None
        if ":" in rest:
            p, t = rest.rsplit(":", 1)
            if "/" not in t and p:
                path, tag = p, t
        return Spec(head, path, tag or None)
    if sep and head == "docker-archive":
        path, _, name = rest.partition(":")
        if not path:
            raise InvalidInput(
                f"{spec!r}: docker-archive: needs a file, like docker-archive:img.tar[:NAME:TAG]"
            )
        return Spec(head, path, name or None)
    if sep and head == "docker-daemon":
        if not rest:
            raise InvalidInput(f"{spec!r}: docker-daemon: needs NAME[:TAG]")
        return Spec(head, "", rest)
    if "://" in spec:
        raise InvalidInput(
            f"unknown transport in {spec!r} (known: {', '.join(k + ':' for k in KINDS)})"
        )
    if sep and head in ("dir", "containers-storage", "docker-archive", "tarball"):
        raise InvalidInput(f"unsupported transport {head!r} in {spec!r}")
    return Spec("docker", spec)


def recorded_name(spec: str | Spec | None) -> str | None:
    """How an image built on ``spec`` names its base (``org.opencontainers.image.base.name``):
    a registry reference as given (less ``docker://``), and nothing for a local source
    (``oci:``, ``oci-archive:``, ``docker-archive:``, ``docker-daemon:``), since its path would
    put the building machine's folders into the image and make the same files in another folder
    give another digest (the base's digest is recorded either way)."""
    if not spec:
        return None
    try:
        s = parse(spec) if isinstance(spec, str) else spec
    except InvalidInput:
        return None
    return s.path if s.kind == "docker" else None


@dataclass(frozen=True)
class WriteResult:
    """Where an image landed: a readable reference, the top digest, and transport details."""

    reference: str
    digest: str
    details: dict[str, Any] = field(default_factory=dict)


def check_writable(spec: str | Spec) -> None:
    """Fail fast, before any expensive work, when a local destination cannot be written.

    Registry and daemon destinations are checked when they are reached (credentials, network).
    """
    s = parse(spec) if isinstance(spec, str) else spec
    if s.kind not in ("oci", "oci-archive", "docker-archive"):
        return
    if s.kind == "oci" and s.tag is not None:
        validate_tag(s.tag)
    path = Path(s.path)
    probe = path if (s.kind == "oci" and path.is_dir()) else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidInput(f"cannot write {s}: {probe} is not a writable folder")
