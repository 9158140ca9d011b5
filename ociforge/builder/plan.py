"""What a build is for, before anything is resolved or written: the requirement list, the base
image of each platform, and the wheel target each base's Python makes.

The build and ``ociforge fetch`` (which fills the caches an offline build reads) both plan with
these functions, so the lock that ``fetch`` writes is the one a build looks up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import cloudpickle

from ..bases.base import default_base
from ..bases.pythoninfo import PythonInfo, python_info
from ..errors import BuildError, InvalidInput, OciforgeError
from ..oci.image import Image, ImageIndex
from ..oci.platform import Platform
from ..python.resolve import ResolveOptions, read_requirement_lines
from ..python.target import Target, parse_libc
from ..transports.transport import open_source


def host_python() -> str:
    """This Python's ``major.minor``: the model is pickled here, so the image must run it too."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def runtime_requirements() -> list[str]:
    """What the runtime itself needs in the image. cloudpickle is pinned to the builder's version:
    pickles it writes are only guaranteed to load with the same cloudpickle."""
    return ["flask>=3.0", "gunicorn>=22.0", f"cloudpickle=={cloudpickle.__version__}", "numpy"]


def requirement_list(requirements) -> list[str]:
    """The user's requirements as a list: given as one, or read from a requirements file."""
    if requirements is None:
        return []
    if isinstance(requirements, (str, os.PathLike)) and requirements != "auto":
        path = Path(requirements)
        if not path.is_file():
            raise InvalidInput(f"requirements file {path} does not exist")
        return read_requirement_lines(path)
    return [str(r) for r in requirements]


def resolve_options(infer_variant: bool = False) -> ResolveOptions:
    """A build shows no requested_by: it skips the second uv run that finds them.
    ``infer_variant`` (no ``gpu`` named): CUDA builds in the resolution make it a CUDA image."""
    return ResolveOptions(annotate=False, infer_variant=infer_variant)


def bases_for(
    base: str | Image | ImageIndex | None,
    platforms: list[Platform],
    python: str | None,
    registry_opts: dict[str, Any],
    offline: bool = False,
    memo=None,
) -> dict[Platform, tuple[Image, str]]:
    """The base image of each platform, and the name it was read from. A built base is looked
    up in the build's cache ``memo`` (:mod:`ociforge.cache.memo`) too, by its recipe and lock."""
    if base is None:
        built = default_base(python or host_python(), platforms, offline=offline, memo=memo)
        return {p: (built[p], f"ociforge-base:python{python or host_python()}") for p in platforms}
    if isinstance(base, (Image, ImageIndex)):
        obj, name = base, ""
    else:
        obj, name = open_source(str(base), **registry_opts), str(base)
    out = {}
    for p in platforms:
        if isinstance(obj, ImageIndex):
            out[p] = (obj.select(p), name)
        elif p.matches(obj.platform):
            out[p] = (obj, name)
        else:
            raise BuildError(
                f"the base {name or obj.digest} is a {obj.platform} image; it has nothing for {p}"
            )
    return out


def targets_for(
    bases: dict[Platform, tuple[Image, str]],
    python: str | None,
    python_path: str | None,
    libc: str | None,
    gpu: str | None,
) -> dict[Platform, Target]:
    """The wheel target of each platform, from its base's Python."""
    declared = None
    if python_path:
        if not python:
            raise InvalidInput(
                "python_path needs python (the version of that interpreter, e.g. '3.12.4')"
            )
        kind, level = parse_libc(libc or "glibc 2.17")
        declared = PythonInfo(version=python, path=python_path, libc=kind, libc_version=level)

    targets: dict[Platform, Target] = {}
    for p, (img, bname) in bases.items():
        try:
            info = python_info(img, declared)
        except OciforgeError as e:
            raise BuildError(f"base {bname or img.digest} ({p}): {e}") from None
        if info.major_minor != host_python():
            raise BuildError(
                f"the base {bname or img.digest} has Python {info.major_minor}, but this model is pickled "
                f"with Python {host_python()}; pickled code only loads on the same minor version: "
                f"build with Python {info.major_minor} or choose a base with Python {host_python()}"
            )
        if python and info.major_minor != ".".join(python.split(".")[:2]):
            raise BuildError(
                f"python={python!r}, but the base for {p} has Python {info.major_minor}"
            )
        libc_ = (
            f"{info.libc} {info.libc_version[0]}.{info.libc_version[1]}"
            if info.libc_version
            else info.libc
        )
        targets[p] = Target.make(
            p,
            info.version,
            libc_,
            gpu or "cpu",
            interpreter=info.path,
            site_packages=info.site_packages,
        )
    return targets
