"""The build's supply-chain step: an SBOM for each platform image and, with a key, signatures.

Both are written after the image, beside it (never into it), so the image digests are the same
with or without them. They go where referrers and signature tags can live: a registry
repository or an OCI layout written with a tag; other destinations (archives, the Docker daemon,
a layout written without a tag, which must keep holding one image) get no SBOM, as with ko. ``sbom=True`` (the default) means SPDX; ``"cyclonedx"`` picks CycloneDX.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..bases.base import default_recipe, read_lock
from ..errors import InvalidInput
from ..oci.image import Image, ImageIndex
from ..oci.platform import Platform
from ..python.lock import Lock
from ..python.target import Target
from ..supply import attach, keys, sbom
from ..supply.place import Place
from ..transports.spec import parse, recorded_name


@dataclass
class SupplyResult:
    # platform -> the digest of the SBOM image document's artifact (it names the contents one)
    sboms: dict[str, str] = field(default_factory=dict)
    signed: list[str] = field(default_factory=list)  # digests signed


def sbom_format(value: bool | str | None) -> str | None:
    """``True``/``"spdx"`` → spdx, ``"cyclonedx"``, ``False``/``None`` → none."""
    if value is None or value is False:
        return None
    if value is True:
        return "spdx"
    if isinstance(value, str) and value in sbom.FORMATS:
        return value
    raise InvalidInput(f"sbom must be True, False, 'spdx' or 'cyclonedx', not {value!r}")


def check(to: str, sbom_value, sign_key) -> tuple[str | None, Any]:
    """Before any work: the SBOM format, and the signing key read (its password asked once)."""
    fmt = sbom_format(sbom_value)
    if sign_key is None:
        return fmt, None
    if parse(to).kind not in ("oci", "docker"):
        raise InvalidInput(
            f"sign_key: {to} cannot hold signatures; sign an image in a registry or OCI layout"
        )
    if hasattr(sign_key, "sign") and hasattr(sign_key, "curve"):
        return fmt, sign_key
    return fmt, keys.read_private_key(os.fspath(sign_key))


def deb_inputs(
    base_arg, python: str | None, host_python: str, platform: Platform
) -> tuple[tuple[sbom.Deb, ...] | None, str, str, list[str]]:
    """The base's .deb list (None for a foreign base), its suite and mirror, and notes."""
    if base_arg is not None:
        return None, "", "", []
    recipe = default_recipe(python or host_python)
    lock = read_lock(recipe, platform.debian_arch)
    if lock is None:
        return (
            None,
            "",
            "",
            [f"the base lock {recipe.lock_path(platform.debian_arch)} was not found"],
        )
    return sbom.debs_from_lock(lock), lock.suite, recipe.mirror, []


def attach_all(
    *,
    to: str,
    index: ImageIndex,
    images: list[Image],
    bases: dict[Platform, tuple[Image, str]],
    targets: dict[Platform, Target],
    locks: dict[Target, Lock],
    report: dict[str, list[dict]],
    base_arg,
    python: str | None,
    host_python: str,
    name: str,
    version: str,
    epoch: int,
    fmt: str | None,
    key,
    registry_opts: dict,
    system: dict | None = None,
) -> SupplyResult:
    out = SupplyResult()
    spec = parse(to)
    if spec.kind not in ("oci", "docker") or (fmt is None and key is None):
        return out
    if spec.kind == "oci" and spec.tag is None and key is None:
        return out  # an untagged layout holds one image, read without naming it: keep it so
    place, _ = Place.of(to, **registry_opts)
    if fmt is not None:
        by_platform = {img.platform: img for img in images}
        for p, target in targets.items():
            img = by_platform.get(p) or next(i for i in images if p.matches(i.platform))
            base_img, base_name = bases[p]
            debs, suite, mirror, notes = deb_inputs(base_arg, python, host_python, p)
            if debs is not None and system and p in system:  # the system packages' layer too
                debs = tuple(
                    sorted(debs + sbom.debs_from_lock(system[p]), key=lambda d: (d.name, d.version))
                )
            layer_infos = tuple(
                sbom.LayerInfo(entry["what"], entry["digest"], entry["size"])
                for entry in report.get(str(p), [])
            )
            inp = sbom.SbomInputs(
                name=name,
                version=version,
                platform=p,
                image_digest=img.digest,
                epoch=epoch,
                base_name=recorded_name(base_name) or "",  # never a local path
                base_digest=base_img.digest,
                debs=debs,
                deb_suite=suite,
                deb_mirror=mirror,
                wheels=sbom.wheels_from_lock(locks[target]),
                layers=layer_infos,
                notes=tuple(notes),
            )
            art = attach.attach_sbom(place, img.descriptor(platform=False), inp, fmt)
            out.sboms[str(p)] = art.digest
    if key is not None:
        out.signed = attach.sign_image(place, index, key)
    return out
