"""Where images come from and go to, named the way skopeo users already write them.

``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``, ``docker-archive:FILE[:NAME[:TAG]]``,
``docker-daemon:NAME[:TAG]`` and registry references (``docker://REF`` or a bare ``REF``).
Every transport reads into and writes from the same :class:`~ociforge.image.Image` /
:class:`~ociforge.image.ImageIndex`, so any pair can be combined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput
from .image import Image, ImageIndex
from .platform import Platform

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
    import os
    from pathlib import Path

    s = parse(spec) if isinstance(spec, str) else spec
    if s.kind not in ("oci", "oci-archive", "docker-archive"):
        return
    if s.kind == "oci" and s.tag is not None:
        from .layout import validate_tag

        validate_tag(s.tag)
    path = Path(s.path)
    probe = path if (s.kind == "oci" and path.is_dir()) else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidInput(f"cannot write {s}: {probe} is not a writable folder")


def open_source(
    spec: str | Spec, *, platform: Platform | str | None = None, **registry_opts
) -> Image | ImageIndex:
    """Read the image or index at ``spec`` (lazily; blobs stream when a destination opens them).

    With ``platform``, an index is narrowed to that platform's image.
    """
    s = parse(spec) if isinstance(spec, str) else spec
    if s.kind == "oci":
        from .layout import read_layout

        obj = read_layout(s.path, s.tag)
    elif s.kind == "oci-archive":
        from .archive import read_oci_archive

        obj = read_oci_archive(s.path, s.tag)
    elif s.kind == "docker-archive":
        from .dockerarchive import read_docker_archive

        obj = read_docker_archive(s.path, s.tag)
    elif s.kind == "docker":
        from . import registry

        return registry.pull(s.path, platform=platform, **registry_opts)
    else:
        raise InvalidInput(f"{s.kind}: cannot be read from (yet)")
    if platform is not None and isinstance(obj, ImageIndex):
        return obj.select(platform)
    if platform is not None and isinstance(obj, Image):
        want = Platform.parse(platform)
        if not want.matches(obj.platform):
            raise InvalidInput(f"{s} is a {obj.platform} image, not {want}")
    return obj


def write_to(
    obj: Image | ImageIndex,
    spec: str | Spec,
    *,
    platform: Platform | str | None = None,
    **opts,
) -> WriteResult:
    """Write ``obj`` to ``spec``; for one-platform destinations ``platform`` picks from an index."""
    s = parse(spec) if isinstance(spec, str) else spec
    if (
        platform is not None
        and isinstance(obj, ImageIndex)
        and s.kind not in ("docker-archive", "docker-daemon")
    ):
        obj = obj.select(platform)
    if s.kind == "oci":
        from .layout import write_layout

        desc = write_layout(obj, s.path, s.tag)
        return WriteResult(str(s), desc.digest)
    if s.kind == "oci-archive":
        from .archive import write_oci_archive

        desc = write_oci_archive(obj, s.path, s.tag)
        return WriteResult(str(s), desc.digest)
    if s.kind == "docker-archive":
        from .dockerarchive import write_docker_archive

        desc = write_docker_archive(obj, s.path, s.tag, platform=platform)
        return WriteResult(str(s), desc.digest)
    if s.kind == "docker-daemon":
        from . import daemon

        return daemon.load(obj, s.tag, platform=platform, **opts)
    from . import registry

    result = registry.push(obj, s.path, **opts)
    return WriteResult(result.reference, result.digest, {"push": result})
