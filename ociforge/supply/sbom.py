"""SBOMs of built images, from what the build installed (not from scanning the image).

One document per platform image, in SPDX 2.3 JSON (default) or CycloneDX 1.6 JSON, listing:

- every Debian package of the base from the base's lock: name, version, architecture, the
  sha256 of the ``.deb``, a ``pkg:deb/debian/...`` purl; the lock carries no licences, so the
  licence is ``NOASSERTION``. An image built on a foreign base (any other image) has no ``.deb``
  list: the document says so and names the base by digest;
- every wheel of the platform's lock: name, version, file name, the sha256 of the wheel file,
  a ``pkg:pypi/...`` purl;
- ociforge's own layers (runtime, bytecode, the model's code, artifacts, the model) by digest;
- the relationships: the image contains each of them and descends from its base.

The JSON is written here directly (sorted keys, no time but ``SOURCE_DATE_EPOCH``, ids and the
namespace derived from the content), so the same inputs give the same bytes; the tests check the
documents with ``spdx-tools`` and ``cyclonedx-python-lib``'s own validators.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name

from ..errors import InvalidInput
from ..oci.manifest import rfc3339
from ..oci.platform import Platform
from ..version import __version__

SPDX_MEDIA_TYPE = "application/spdx+json"
CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json"
FORMATS = {"spdx": SPDX_MEDIA_TYPE, "cyclonedx": CYCLONEDX_MEDIA_TYPE}
NOASSERTION = "NOASSERTION"
NAMESPACE_ROOT = "https://ociforge.invalid/spdxdocs"  # .invalid: a name, never a place to fetch


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    architecture: str
    sha256: str
    filename: str = ""
    source: str = ""
    license: str = ""  # an SPDX expression when the lock declares one


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str
    url: str = ""
    license: str = ""


@dataclass(frozen=True)
class LayerInfo:
    what: str
    digest: str
    size: int
    media_type: str = ""


@dataclass(frozen=True)
class SbomInputs:
    """What one platform image holds, as the build knows it."""

    name: str
    version: str
    platform: Platform
    image_digest: str  # the platform image's manifest digest (the SBOM's subject)
    epoch: int
    base_name: str
    base_digest: str
    debs: tuple[Deb, ...] | None  # None: a foreign base, no .deb list
    deb_suite: str = ""
    deb_mirror: str = ""
    wheels: tuple[Wheel, ...] = ()
    layers: tuple[LayerInfo, ...] = ()
    notes: tuple[str, ...] = field(default=())


def debs_from_lock(lock: Any) -> tuple[Deb, ...]:
    """The packages of a base lock (``ociforge.bases.base.Lock``), sorted by name."""
    return tuple(
        sorted(
            (
                Deb(
                    p.name,
                    p.version,
                    p.architecture,
                    p.sha256,
                    p.filename,
                    p.source or p.name,
                    getattr(p, "license", "") or "",
                )
                for p in lock.packages
            ),
            key=lambda d: (d.name, d.architecture, d.version),
        )
    )


def wheels_from_lock(lock: Any) -> tuple[Wheel, ...]:
    """The wheels of a wheel lock (``ociforge.python.lock.Lock``), sorted by name."""
    return tuple(
        sorted(
            (
                Wheel(
                    w.name, w.version, w.filename, w.sha256, w.url, getattr(w, "license", "") or ""
                )
                for w in lock.packages
            ),
            key=lambda w: (canonicalize_name(w.name), w.version, w.filename),
        )
    )


# ---------------------------------------------------------------------------------------------
# Package URLs


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe=".-_~")


def deb_purl(d: Deb, suite: str = "") -> str:
    quals = [f"arch={_q(d.architecture)}"]
    if suite:
        quals.append(f"distro={_q('debian-' + suite)}")
    return f"pkg:deb/debian/{_q(d.name)}@{_q(d.version)}?{'&'.join(quals)}"


def pypi_purl(w: Wheel) -> str:
    return f"pkg:pypi/{_q(canonicalize_name(w.name))}@{_q(w.version)}"


def oci_purl(name: str, digest: str, platform: Platform) -> str:
    quals = [f"arch={_q(platform.architecture)}", f"os={_q(platform.os)}"]
    if platform.variant:
        quals.append(f"variant={_q(platform.variant)}")
    return f"pkg:oci/{_q(name.lower())}@{_q(digest)}?{'&'.join(quals)}"


# ---------------------------------------------------------------------------------------------


def _hex(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    if alg != "sha256" or len(hexpart) != 64:
        raise InvalidInput(f"SBOM: expected a sha256 digest, got {digest!r}")
    return hexpart


def _id(*parts: str) -> str:
    text = "-".join(parts)
    return re.sub(r"[^A-Za-z0-9.\-]", "-", text)


def _short(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def _download(url: str) -> str:
    """An http(s) URL as SPDX takes it; anything else (a local ``file:`` index) is NOASSERTION."""
    return url if url.startswith(("https://", "http://")) else NOASSERTION


def _base_comment(inp: SbomInputs) -> str:
    if inp.debs is None:
        return (
            f"foreign base image {inp.base_name or inp.base_digest}: ociforge installed none of "
            "its contents, so its packages (.deb or otherwise) are not listed here"
        )
    return (
        f"ociforge base built from Debian {inp.deb_suite} packages; each package's .deb is "
        "listed with its sha256 from the base's lock"
    )


def spdx(inp: SbomInputs) -> dict:
    """The SPDX 2.3 document (as a dict) for ``inp``."""
    img_hex = _hex(inp.image_digest)
    image_id = "SPDXRef-image"
    base_id = "SPDXRef-base"
    packages: list[dict] = []
    rels: list[dict] = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_id,
        }
    ]

    def pkg(spdx_id, name, version, *, sha256=None, purl=None, purpose, comment=None, **extra):
        out = {
            "SPDXID": spdx_id,
            "name": name,
            "downloadLocation": extra.pop("download", NOASSERTION),
            "filesAnalyzed": False,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": extra.pop("license", "") or NOASSERTION,
            "copyrightText": NOASSERTION,
            "primaryPackagePurpose": purpose,
        }
        if version:
            out["versionInfo"] = version
        if sha256:
            out["checksums"] = [{"algorithm": "SHA256", "checksumValue": sha256}]
        if purl:
            out["externalRefs"] = [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl,
                }
            ]
        if comment:
            out["comment"] = comment
        out.update(extra)
        packages.append(out)
        return spdx_id

    pkg(
        image_id,
        inp.name,
        inp.version,
        sha256=img_hex,
        purl=oci_purl(inp.name, inp.image_digest, inp.platform),
        purpose="CONTAINER",
        comment=f"the {inp.platform} image; its checksum is its manifest digest",
    )
    pkg(
        base_id,
        inp.base_name or "base image",
        "",
        sha256=_hex(inp.base_digest) if inp.base_digest else None,
        purpose="CONTAINER",
        comment=_base_comment(inp),
    )
    rels.append(
        {
            "spdxElementId": image_id,
            "relationshipType": "DESCENDANT_OF",
            "relatedSpdxElement": base_id,
        }
    )
    contained: list[str] = []
    for d in inp.debs or ():
        download = (
            f"{inp.deb_mirror.rstrip('/')}/{d.filename}"
            if inp.deb_mirror and d.filename
            else NOASSERTION
        )
        contained.append(
            pkg(
                _id(
                    "SPDXRef-deb", d.name, d.architecture, _short(d.name, d.version, d.architecture)
                ),
                d.name,
                d.version,
                sha256=d.sha256,
                purl=deb_purl(d, inp.deb_suite),
                purpose="LIBRARY",
                download=download,
                license=d.license,
                packageFileName=d.filename.rsplit("/", 1)[-1] if d.filename else NOASSERTION,
                sourceInfo=f"Debian source package {d.source or d.name}; architecture {d.architecture}",
            )
        )
    for w in inp.wheels:
        contained.append(
            pkg(
                _id("SPDXRef-wheel", canonicalize_name(w.name), _short(w.filename, w.sha256)),
                w.name,
                w.version,
                sha256=w.sha256,
                purl=pypi_purl(w),
                purpose="LIBRARY",
                download=_download(w.url),
                license=w.license,
                packageFileName=w.filename,
            )
        )
    for n, layer in enumerate(inp.layers):
        contained.append(
            pkg(
                _id("SPDXRef-layer", str(n), _short(layer.digest)),
                layer.what,
                "",
                sha256=_hex(layer.digest),
                purpose="ARCHIVE",
                comment=f"an image layer ociforge wrote ({layer.media_type or 'tar'}, {layer.size} bytes); "
                "its checksum is its digest",
            )
        )
    for spdx_id in contained:
        rels.append(
            {
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": spdx_id,
            }
        )
    doc_name = f"{inp.name}-{inp.version}-{str(inp.platform).replace('/', '-')}"
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": doc_name,
        "documentNamespace": f"{NAMESPACE_ROOT}/{_q(doc_name)}-{img_hex}",
        "creationInfo": {
            "created": rfc3339(inp.epoch),
            "creators": [f"Tool: ociforge-{__version__}"],
            "comment": "written by the build from its locks, not by scanning the image",
        },
        "comment": _base_comment(inp) + "".join(f"; {n}" for n in inp.notes),
        "packages": packages,
        "relationships": rels,
    }
    return doc


def cyclonedx(inp: SbomInputs) -> dict:
    """The CycloneDX 1.6 document (as a dict) for ``inp``."""
    img_hex = _hex(inp.image_digest)
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{NAMESPACE_ROOT}/cyclonedx/{inp.name}/{img_hex}")
    components: list[dict] = []

    def comp(kind, ref, name, version, *, sha256=None, purl=None, props=(), desc=None):
        out: dict = {"type": kind, "bom-ref": ref, "name": name}
        if version:
            out["version"] = version
        if sha256:
            out["hashes"] = [{"alg": "SHA-256", "content": sha256}]
        if purl:
            out["purl"] = purl
        if desc:
            out["description"] = desc
        if props:
            out["properties"] = [{"name": k, "value": v} for k, v in props]
        components.append(out)
        return ref

    refs = [
        comp(
            "container",
            "base",
            inp.base_name or "base image",
            "",
            sha256=_hex(inp.base_digest) if inp.base_digest else None,
            desc=_base_comment(inp),
        )
    ]
    for d in inp.debs or ():
        lic = [
            ("ociforge:license", d.license or f"{NOASSERTION} (the base lock carries no licences)")
        ]
        refs.append(
            comp(
                "library",
                f"deb:{d.name}:{d.architecture}:{d.version}",
                d.name,
                d.version,
                sha256=d.sha256,
                purl=deb_purl(d, inp.deb_suite),
                props=[
                    ("ociforge:deb:filename", d.filename),
                    ("ociforge:deb:architecture", d.architecture),
                    *lic,
                ],
            )
        )
    for w in inp.wheels:
        refs.append(
            comp(
                "library",
                f"wheel:{w.filename}",
                w.name,
                w.version,
                sha256=w.sha256,
                purl=pypi_purl(w),
                props=[("ociforge:wheel:filename", w.filename)],
            )
        )
    for n, layer in enumerate(inp.layers):
        refs.append(
            comp(
                "file",
                f"layer:{n}:{layer.digest}",
                layer.what,
                "",
                sha256=_hex(layer.digest),
                props=[
                    ("ociforge:layer:digest", layer.digest),
                    ("ociforge:layer:size", str(layer.size)),
                ],
            )
        )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(inp.epoch),
            "tools": {
                "components": [{"type": "application", "name": "ociforge", "version": __version__}]
            },
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": inp.name,
                "version": inp.version,
                "hashes": [{"alg": "SHA-256", "content": img_hex}],
                "purl": oci_purl(inp.name, inp.image_digest, inp.platform),
                "description": f"the {inp.platform} image; its hash is its manifest digest",
            },
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": refs}],
    }


def render(inp: SbomInputs, fmt: str = "spdx") -> tuple[bytes, str]:
    """The document's bytes and media type; the same inputs always give the same bytes."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown SBOM format {fmt!r} ({' or '.join(FORMATS)})")
    doc = spdx(inp) if fmt == "spdx" else cyclonedx(inp)
    data = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    return data, FORMATS[fmt]


def format_of(media_type: str) -> str:
    for name, mt_ in FORMATS.items():
        if mt_ == media_type:
            return name
    raise InvalidInput(f"not an SBOM media type: {media_type!r}")


def artifact_types() -> Sequence[str]:
    return tuple(FORMATS.values())
