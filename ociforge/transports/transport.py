"""Where images come from and go to: any transport string (:mod:`ociforge.transports.spec`).

``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``, ``docker-archive:FILE[:NAME[:TAG]]``,
``docker-daemon:NAME[:TAG]`` and registry references (``docker://REF`` or a bare ``REF``).
Every transport reads into and writes from the same :class:`~ociforge.oci.image.Image` /
:class:`~ociforge.oci.image.ImageIndex`, so any pair can be combined.
"""

from __future__ import annotations

from ..errors import InvalidInput
from ..oci.image import Image, ImageIndex
from ..oci.platform import Platform
from . import daemon
from .archive import read_oci_archive, write_oci_archive
from .dockerarchive import read_docker_archive, write_docker_archive
from .layout import read_layout, write_layout
from .registry import remote as registry
from .spec import Spec, WriteResult, parse


def open_source(
    spec: str | Spec, *, platform: Platform | str | None = None, **registry_opts
) -> Image | ImageIndex:
    """Read the image or index at ``spec`` (lazily; blobs stream when a destination opens them).

    With ``platform``, an index is narrowed to that platform's image.
    """
    s = parse(spec) if isinstance(spec, str) else spec
    if s.kind == "oci":
        obj = read_layout(s.path, s.tag)
    elif s.kind == "oci-archive":
        obj = read_oci_archive(s.path, s.tag)
    elif s.kind == "docker-archive":
        obj = read_docker_archive(s.path, s.tag)
    elif s.kind == "docker":
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
        desc = write_layout(obj, s.path, s.tag)
        return WriteResult(str(s), desc.digest)
    if s.kind == "oci-archive":
        desc = write_oci_archive(obj, s.path, s.tag)
        return WriteResult(str(s), desc.digest)
    if s.kind == "docker-archive":
        desc = write_docker_archive(obj, s.path, s.tag, platform=platform)
        return WriteResult(str(s), desc.digest)
    if s.kind == "docker-daemon":
        return daemon.load(obj, s.tag, platform=platform, **opts)

    result = registry.push(obj, s.path, **opts)
    return WriteResult(result.reference, result.digest, {"push": result})
