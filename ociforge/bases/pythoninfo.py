"""The Python of a base image, which the model build must know (wheel tags, where to install).

An ociforge base says it in labels. Any other image is read: its config's environment, then one
streaming pass over its layers for the few files that name a Python and its libc. Where neither
tells, the error says how to declare it.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field

from ..errors import NotFound
from ..oci.image import Image, visit_layer_members
from ..oci.layer import image_path
from .debian import upstream_version

LABEL = "dev.ociforge"
OCIFORGE_SITE_PACKAGES = "/opt/ociforge/site-packages"


@dataclass(frozen=True)
class PythonInfo:
    """What the model build must know of a base's Python (wheel tags, where to install)."""

    version: str  # "3.11.2" (or "3.11" when the micro version is unknown)
    path: str  # "/usr/bin/python3.11"
    libc: str = "glibc"  # or "musl"
    libc_version: tuple[int, int] | None = None
    site_packages: str = OCIFORGE_SITE_PACKAGES

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def labels(self) -> dict[str, str]:
        out = {
            f"{LABEL}.python.version": self.version,
            f"{LABEL}.python.path": self.path,
            f"{LABEL}.python.site-packages": self.site_packages,
            f"{LABEL}.libc": self.libc,
        }
        if self.libc_version:
            out[f"{LABEL}.libc.version"] = f"{self.libc_version[0]}.{self.libc_version[1]}"
        return out


_DECLARE = (
    "declare it: ociforge.build(..., python='3.12.4', python_path='/usr/local/bin/python3.12', "
    "libc='glibc 2.36'), or on the command line --python 3.12.4 --python-path "
    "/usr/local/bin/python3.12 --libc 'glibc 2.36'"
)


def _parse_libc_version(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\..*)?", text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def python_info(image: Image, declared: PythonInfo | None = None) -> PythonInfo:
    """The Python of a base: declared, else from our labels, else found in its config and files."""
    if declared is not None:
        return declared
    labels = image.config.config.labels
    if labels.get(f"{LABEL}.python.path") and labels.get(f"{LABEL}.python.version"):
        return PythonInfo(
            version=labels[f"{LABEL}.python.version"],
            path=labels[f"{LABEL}.python.path"],
            libc=labels.get(f"{LABEL}.libc", "glibc"),
            libc_version=_parse_libc_version(labels.get(f"{LABEL}.libc.version", "")),
            site_packages=labels.get(f"{LABEL}.python.site-packages", OCIFORGE_SITE_PACKAGES),
        )
    return _python_from_files(image)


_PY_BIN = re.compile(r"^(usr/local/bin|usr/bin|bin|opt/conda/bin|opt/python/bin)/python(3\.\d+)$")
_GLIBC = re.compile(r"^(usr/)?lib(64)?/([^/]+/)?(libc\.so\.6|libc-(\d+\.\d+)\.so)$")
_MUSL = re.compile(r"^(usr/)?lib/ld-musl-[^/]+\.so\.1$")
_GLIBC_VERSION = re.compile(rb"release version (\d+)\.(\d+)")


@dataclass
class _Found:
    files: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    glibc_version: dict[str, tuple[int, int]] = field(default_factory=dict)
    texts: dict[str, bytes] = field(default_factory=dict)


def _interesting(path: str) -> str:
    if _PY_BIN.match(path) or _MUSL.match(path):
        return "meta"
    if _GLIBC.match(path):
        return "libc"
    if path in ("var/lib/dpkg/status", "lib/apk/db/installed") or path.startswith(
        "var/lib/dpkg/status.d/"
    ):
        return "text"
    return ""


def _scan_layers(image: Image) -> _Found:
    """One streaming pass over the layers, keeping only the few files that say what Python is there."""
    found = _Found()

    def visit(_desc, tar: tarfile.TarFile, ti: tarfile.TarInfo) -> None:
        path = image_path(ti.name)
        head, _, base = path.rpartition("/")
        if base.startswith(".wh."):
            hidden = (head + "/" if head else "") + base[4:]
            for table in (found.files, found.texts, found.glibc_version):
                for k in [
                    k
                    for k in table
                    if k == hidden
                    or k.startswith(hidden + "/")
                    or base == ".wh..wh..opq"
                    and k.startswith(head + "/")
                ]:
                    del table[k]
            return
        kind = _interesting(path)
        if not kind:
            return
        found.files[path] = ti
        if kind == "libc" and ti.isreg():
            v = _glibc_version_of(tar.extractfile(ti))
            if v:
                found.glibc_version[path] = v
        elif kind == "text" and ti.isreg() and ti.size < (64 << 20):
            found.texts[path] = _python_lines(tar.extractfile(ti))

    visit_layer_members(image, visit, "the base")
    return found


def _glibc_version_of(f) -> tuple[int, int] | None:
    tail = b""
    while chunk := f.read(1 << 20):
        m = _GLIBC_VERSION.search(tail + chunk)
        if m:
            return int(m.group(1)), int(m.group(2))
        tail = chunk[-64:]
    return None


def _python_lines(f) -> bytes:
    """The records of a dpkg/apk database that are about Python packages (kept small)."""
    keep, para = [], []
    for line in f:
        if not line.strip():
            text = b"".join(para)
            if re.search(rb"^(Package: |P:)(python3|libpython3|musl$)", text, re.M):
                keep.append(text)
            para = []
        else:
            para.append(line)
    text = b"".join(para)
    if re.search(rb"^(Package: |P:)(python3|libpython3|musl$)", text, re.M):
        keep.append(text)
    return b"\n".join(keep)


def _python_from_files(image: Image) -> PythonInfo:
    env = image.config.config.env_dict()
    found = _scan_layers(image)
    bins = sorted((m.group(2), m.group(1), p) for p in found.files if (m := _PY_BIN.match(p)))
    if not bins:
        raise NotFound(
            f"the base image {image.digest} has no Python interpreter (no /usr/bin/python3.X or /usr/local/bin/python3.X); "
            + _DECLARE
        )
    order = {"usr/local/bin": 0, "opt/conda/bin": 1, "opt/python/bin": 1, "usr/bin": 2, "bin": 3}
    bins.sort(key=lambda b: (order.get(b[1], 9), [-int(x) for x in b[0].split(".")]))
    mm, _dir, path = bins[0]
    version = mm
    if env.get("PYTHON_VERSION", "").startswith(mm + "."):
        version = env["PYTHON_VERSION"]
    else:
        for text in found.texts.values():
            m = re.search(
                rb"(?:Package: python%s-minimal\n(?:.*\n)*?Version: |P:python3\nV:)(\S+)"
                % re.escape(mm.encode()),
                text,
            )
            if m:
                up = upstream_version(m.group(1).decode())
                if up.startswith(mm + "."):
                    version = up
                    break
    libc, libc_version = "glibc", None
    if any(_MUSL.match(p) for p in found.files):
        libc = "musl"
        for text in found.texts.values():
            m = re.search(rb"P:musl\nV:(\d+\.\d+)", text)
            if m:
                libc_version = _parse_libc_version(m.group(1).decode())
    else:
        for p in found.files:
            m = _GLIBC.match(p)
            if m and m.group(5):
                libc_version = _parse_libc_version(m.group(5))
        libc_version = libc_version or next(iter(found.glibc_version.values()), None)
        if not any(_GLIBC.match(p) for p in found.files):
            raise NotFound(
                f"the base image {image.digest} has {'/' + path} but no C library was found; "
                + _DECLARE
            )
    return PythonInfo(version=version, path="/" + path, libc=libc, libc_version=libc_version)
