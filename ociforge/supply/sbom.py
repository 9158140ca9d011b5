"""SBOMs of built images, from what the build installed (not from scanning the image).

Two documents per platform image, in SPDX 2.3 JSON (default) or CycloneDX 1.6 JSON:

- the *contents* document: what is keyed by the base and the lock, so that a model-only rebuild
  gives the same bytes (the same blob, which a push finds there and does not send again):

  - every Debian package of the base from the base's lock (and the system packages): name,
    version, architecture, the sha256 of the ``.deb``, a ``pkg:deb/debian/...`` purl; the lock
    carries no licences, so the licence is ``NOASSERTION``. An image built on a foreign base (any
    other image) has no ``.deb`` list: the document says so;
  - every wheel of the platform's lock: name, version, file name, the sha256 of the wheel file,
    a ``pkg:pypi/...`` purl;

- the *image* document (a few KiB): the image (its manifest digest), its base by digest,
  ociforge's own layers (wheel layers, bytecode, runtime, the model's code, artifacts, the model)
  by digest, the relationships (the image descends from its base, contains its layers and the
  contents document's packages), and the contents document named by its sha256 (SPDX
  ``externalDocumentRefs``; CycloneDX an external reference of type ``bom``, a BOM-Link). That
  sha256 is the contents blob's digest.

One 64 KiB document naming the image would be a new blob on every rebuild; split, a model-only
rebuild pushes only the small one. :func:`merge` puts the two back together into one complete
document (what ``ociforge sbom`` prints by default).

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
# the per-image document's artifact type: scanners that take "the" SBOM referrer of an image
# (artifactType application/spdx+json ...) find the contents document, the one with packages
IMAGE_ARTIFACT_TYPES = {
    "spdx": "application/vnd.ociforge.sbom.image.v1.spdx+json",
    "cyclonedx": "application/vnd.ociforge.sbom.image.v1.cyclonedx+json",
}
CONTENTS_REF = "DocumentRef-contents"
CONTENTS_ID = "SPDXRef-contents"


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


# ---------------------------------------------------------------------------------------------
# The two documents of an image: what is keyed by the base and the lock ("contents"), and what
# is this image's own (the image, its base, its layers), which names the first by its sha256.


@dataclass(frozen=True)
class SplitSbom:
    """The two documents of one platform image, as bytes, and their (shared) media type."""

    contents: bytes  # base's .debs, system packages, wheels: the same for a model-only rebuild
    image: bytes  # the image, its base and layers; references ``contents`` by its sha256
    media_type: str

    @property
    def contents_sha256(self) -> str:
        return hashlib.sha256(self.contents).hexdigest()


def _dump(doc: dict, *, indent: int | None = None) -> bytes:
    """Sorted keys, so the same document gives the same bytes; stored documents are compact
    (a model-only rebuild pushes the image document: every byte counts), printed ones indented."""
    separators = (",", ": ") if indent else (",", ":")
    text = json.dumps(doc, indent=indent, sort_keys=True, ensure_ascii=False, separators=separators)
    return text.encode() + b"\n"


def _plat(platform: Platform) -> str:
    return str(platform).replace("/", "-")


def _spdx_package(
    spdx_id: str,
    name: str,
    version: str,
    *,
    purpose: str,
    sha256: str | None = None,
    purl: str | None = None,
    comment: str | None = None,
    download: str = NOASSERTION,
    license: str = "",
    **extra: str,
) -> dict:
    out = {
        "SPDXID": spdx_id,
        "name": name,
        "downloadLocation": download,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": license or NOASSERTION,
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
    return out


def _rel(a: str, kind: str, b: str) -> dict:
    return {"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b}


def _spdx_creation(epoch: int) -> dict:
    return {
        "created": rfc3339(epoch),
        "creators": [f"Tool: ociforge-{__version__}"],
        "comment": "written by the build from its locks, not by scanning the image",
    }


def _spdx_debs(inp: SbomInputs) -> list[dict]:
    out = []
    for d in inp.debs or ():
        download = (
            f"{inp.deb_mirror.rstrip('/')}/{d.filename}"
            if inp.deb_mirror and d.filename
            else NOASSERTION
        )
        out.append(
            _spdx_package(
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
    return out


def _spdx_wheels(inp: SbomInputs) -> list[dict]:
    return [
        _spdx_package(
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
        for w in inp.wheels
    ]


def spdx_contents(inp: SbomInputs) -> dict:
    """The SPDX 2.3 document of what is keyed by the base and the lock: the base's Debian
    packages (system packages included) and the wheels, under one package ``SPDXRef-contents``.
    Nothing of the model, its name, version, layers or image digest is in it, so a model-only
    rebuild gives the same bytes (the same blob, not pushed again)."""
    listed = _spdx_debs(inp) + _spdx_wheels(inp)
    root = _spdx_package(
        CONTENTS_ID,
        f"packages installed in the {inp.platform} image",
        "",
        purpose="OTHER",
        comment="the base's Debian packages, the system packages and the wheels of the lock",
    )
    rels = [_rel("SPDXRef-DOCUMENT", "DESCRIBES", CONTENTS_ID)]
    rels += [_rel(CONTENTS_ID, "CONTAINS", p["SPDXID"]) for p in listed]
    name = f"ociforge-contents-{_plat(inp.platform)}"
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "creationInfo": _spdx_creation(inp.epoch),
        "comment": _base_comment(inp) + "".join(f"; {n}" for n in inp.notes),
        "packages": [root, *listed],
        "relationships": rels,
    }
    # the namespace must be unique to the document: derive it from everything else in it
    doc["documentNamespace"] = (
        f"{NAMESPACE_ROOT}/{_q(name)}-{hashlib.sha256(_dump(doc)).hexdigest()}"
    )
    return doc


def spdx_image(inp: SbomInputs, contents: dict, contents_bytes: bytes) -> dict:
    """The SPDX 2.3 document of the image itself: the image (its checksum is its manifest
    digest), its base, ociforge's layers by digest (the runtime, the model ...), and that the
    image contains ``DocumentRef-contents:SPDXRef-contents``, the contents document named by
    its namespace and sha256 (= its blob's digest, a referrer of the same image)."""
    img_hex = _hex(inp.image_digest)
    image_id, base_id = "SPDXRef-image", "SPDXRef-base"
    packages = [
        _spdx_package(
            image_id,
            inp.name,
            inp.version,
            sha256=img_hex,
            purl=oci_purl(inp.name, inp.image_digest, inp.platform),
            purpose="CONTAINER",
            comment=f"the {inp.platform} image; its checksum is its manifest digest",
        ),
        _spdx_package(
            base_id,
            inp.base_name or "base image",
            "",
            sha256=_hex(inp.base_digest) if inp.base_digest else None,
            purpose="CONTAINER",
            comment=_base_comment(inp),
        ),
    ]
    for n, layer in enumerate(inp.layers):
        packages.append(
            _spdx_package(
                _id("SPDXRef-layer", str(n), _short(layer.digest)),
                layer.what,
                "",
                sha256=_hex(layer.digest),
                purpose="ARCHIVE",
                comment=f"{layer.media_type or 'tar'} layer, {layer.size} bytes",
            )
        )
        for key in ("licenseConcluded", "licenseDeclared", "copyrightText"):  # optional in 2.3
            del packages[-1][key]
    rels = [
        _rel("SPDXRef-DOCUMENT", "DESCRIBES", image_id),
        _rel(image_id, "DESCENDANT_OF", base_id),
        *(_rel(image_id, "CONTAINS", p["SPDXID"]) for p in packages[2:]),
        _rel(image_id, "CONTAINS", f"{CONTENTS_REF}:{CONTENTS_ID}"),
    ]
    doc_name = f"{inp.name}-{inp.version}-{_plat(inp.platform)}"
    contents_hex = hashlib.sha256(contents_bytes).hexdigest()
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": doc_name,
        "documentNamespace": f"{NAMESPACE_ROOT}/{_q(doc_name)}-{img_hex}",
        "creationInfo": _spdx_creation(inp.epoch),
        "comment": (
            f"the packages the image holds are in {CONTENTS_REF}, the SBOM referrer of this image "
            f"whose blob is sha256:{contents_hex}; each ARCHIVE package is an image layer "
            "ociforge wrote, its checksum the layer's digest"
        ),
        "externalDocumentRefs": [
            {
                "externalDocumentId": CONTENTS_REF,
                "spdxDocument": contents["documentNamespace"],
                "checksum": {"algorithm": "SHA256", "checksumValue": contents_hex},
            }
        ],
        "packages": packages,
        "relationships": rels,
    }


def _cdx_component(
    kind, ref, name, version, *, sha256=None, purl=None, props=(), desc=None
) -> dict:
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
    return out


def _cdx_tools() -> dict:
    return {"components": [{"type": "application", "name": "ociforge", "version": __version__}]}


def cyclonedx_contents(inp: SbomInputs) -> dict:
    """The CycloneDX 1.6 BOM of what is keyed by the base and the lock (see :func:`spdx_contents`)."""
    components = []
    for d in inp.debs or ():
        lic = d.license or f"{NOASSERTION} (the base lock carries no licences)"
        components.append(
            _cdx_component(
                "library",
                f"deb:{d.name}:{d.architecture}:{d.version}",
                d.name,
                d.version,
                sha256=d.sha256,
                purl=deb_purl(d, inp.deb_suite),
                props=[
                    ("ociforge:deb:filename", d.filename),
                    ("ociforge:deb:architecture", d.architecture),
                    ("ociforge:license", lic),
                ],
            )
        )
    for w in inp.wheels:
        components.append(
            _cdx_component(
                "library",
                f"wheel:{w.filename}",
                w.name,
                w.version,
                sha256=w.sha256,
                purl=pypi_purl(w),
                props=[("ociforge:wheel:filename", w.filename)],
            )
        )
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(inp.epoch),
            "tools": _cdx_tools(),
            "component": {
                "type": "container",
                "bom-ref": "contents",
                "name": f"packages installed in the {inp.platform} image",
                "description": _base_comment(inp) + "".join(f"; {n}" for n in inp.notes),
            },
        },
        "components": components,
        "dependencies": [{"ref": "contents", "dependsOn": [c["bom-ref"] for c in components]}],
    }
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{NAMESPACE_ROOT}/cyclonedx/contents/{hashlib.sha256(_dump(doc)).hexdigest()}")  # fmt: skip
    doc["serialNumber"] = f"urn:uuid:{serial}"
    return doc


def cyclonedx_image(inp: SbomInputs, contents: dict, contents_bytes: bytes) -> dict:
    """The CycloneDX 1.6 BOM of the image itself; its external reference of type ``bom`` names
    the contents BOM by BOM-Link (``urn:cdx:<serial>/1``) and SHA-256."""
    img_hex = _hex(inp.image_digest)
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{NAMESPACE_ROOT}/cyclonedx/{inp.name}/{img_hex}")
    components = [
        _cdx_component(
            "container",
            "base",
            inp.base_name or "base image",
            "",
            sha256=_hex(inp.base_digest) if inp.base_digest else None,
            desc=_base_comment(inp),
        )
    ]
    for n, layer in enumerate(inp.layers):
        components.append(
            _cdx_component(
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
    link = f"{contents['serialNumber'].replace('urn:uuid:', 'urn:cdx:', 1)}/{contents['version']}"
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(inp.epoch),
            "tools": _cdx_tools(),
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
        "externalReferences": [
            {
                "type": "bom",
                "url": link,
                "hashes": [
                    {"alg": "SHA-256", "content": hashlib.sha256(contents_bytes).hexdigest()}
                ],
                "comment": "the packages the image holds: the BOM referrer of this image with this hash",
            }
        ],
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": [c["bom-ref"] for c in components]}],
    }


def render_split(inp: SbomInputs, fmt: str = "spdx") -> SplitSbom:
    """The contents and image documents of ``inp``; the same inputs always give the same bytes."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown SBOM format {fmt!r} ({' or '.join(FORMATS)})")
    contents = spdx_contents(inp) if fmt == "spdx" else cyclonedx_contents(inp)
    contents_bytes = _dump(contents)
    image_doc = (spdx_image if fmt == "spdx" else cyclonedx_image)(inp, contents, contents_bytes)
    return SplitSbom(contents_bytes, _dump(image_doc), FORMATS[fmt])


def render(inp: SbomInputs, fmt: str = "spdx") -> tuple[bytes, str]:
    """One complete document (the image document with the contents merged in) and its media type."""
    split = render_split(inp, fmt)
    return merge(split.image, split.contents, fmt), split.media_type


# ---------------------------------------------------------------------------------------------
# Reading the two back as one document (``ociforge sbom``): they come from a registry or a
# layout, so everything is checked before it is used.


def _load(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"SBOM: the {what} document is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"SBOM: the {what} document is not a JSON object")
    return doc


def _list(doc: dict, key: str, what: str) -> list:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidInput(f"SBOM: {key} of the {what} document is not a list of objects")
    return value


def contents_sha256(image_doc: bytes, fmt: str) -> str:
    """The sha256 (hex) of the contents document the image document references."""
    doc = _load(image_doc, "image")
    key, want = (
        ("externalDocumentRefs", CONTENTS_REF) if fmt == "spdx" else ("externalReferences", "bom")
    )
    for ref in _list(doc, key, "image"):
        if fmt == "spdx" and ref.get("externalDocumentId") == want:
            checksum = ref.get("checksum") or {}
            if isinstance(checksum, dict) and checksum.get("algorithm") == "SHA256":
                return _checked_hex(checksum.get("checksumValue"))
        if fmt != "spdx" and ref.get("type") == want:
            for h in ref.get("hashes") or []:
                if isinstance(h, dict) and h.get("alg") == "SHA-256":
                    return _checked_hex(h.get("content"))
    raise InvalidInput("SBOM: the image document names no contents document by sha256")


def _checked_hex(value) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise InvalidInput("SBOM: the contents document's sha256 is malformed")
    return value


def merge(image_doc: bytes, contents_doc: bytes, fmt: str) -> bytes:
    """One document holding both: the image document, with the contents document it
    references (checked by sha256) in place of the reference. Deterministic."""
    want = contents_sha256(image_doc, fmt)
    if hashlib.sha256(contents_doc).hexdigest() != want:
        raise InvalidInput(f"SBOM: the contents document does not hash to sha256:{want}")
    image, contents = _load(image_doc, "image"), _load(contents_doc, "contents")
    if fmt == "spdx":
        prefix = f"{CONTENTS_REF}:"
        rels = [
            {
                k: (v[len(prefix) :] if isinstance(v, str) and v.startswith(prefix) else v)
                for k, v in r.items()
            }
            for r in _list(image, "relationships", "image")
        ]
        rels += [
            r
            for r in _list(contents, "relationships", "contents")
            if r.get("spdxElementId") != "SPDXRef-DOCUMENT"
        ]
        out = {k: v for k, v in image.items() if k != "externalDocumentRefs"}
        out["documentNamespace"] = f"{image.get('documentNamespace')}-complete"
        out["comment"] = contents.get("comment", "")
        out["packages"] = _list(image, "packages", "image") + _list(
            contents, "packages", "contents"
        )
        out["relationships"] = rels
    else:
        root = (contents.get("metadata") or {}).get("component")
        if not isinstance(root, dict):
            raise InvalidInput("SBOM: the contents document has no metadata.component")
        deps = _list(image, "dependencies", "image")
        if not all(isinstance(d.get("dependsOn", []), list) for d in deps):
            raise InvalidInput("SBOM: a dependsOn of the image document is not a list")
        deps = [
            {**d, "dependsOn": [*d.get("dependsOn", []), root.get("bom-ref")]}
            if d.get("ref") == "image"
            else d
            for d in deps
        ]
        out = {k: v for k, v in image.items() if k != "externalReferences"}
        out["serialNumber"] = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{image.get('serialNumber')}/complete"))  # fmt: skip
        out["components"] = [*_list(image, "components", "image"), root, *_list(contents, "components", "contents")]  # fmt: skip
        out["dependencies"] = deps + _list(contents, "dependencies", "contents")
    return _dump(out, indent=2)


def format_of(media_type: str) -> str:
    for name, mt_ in FORMATS.items():
        if mt_ == media_type:
            return name
    raise InvalidInput(f"not an SBOM media type: {media_type!r}")


def artifact_types() -> Sequence[str]:
    return tuple(FORMATS.values())
