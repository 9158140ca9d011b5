"""The names a base image holds, and where its dynamic loader looks for libraries.

    base_files(image)   # BaseFiles: its files and symlinks, from one pass over its layers' tar headers

Only tar headers are read (and the few ``/etc/ld.so.conf*`` files' text); the result is kept in
the cache under the base's layer digests, so a rebuild on the same base reads no layer at all.
Whiteouts of later layers hide what earlier ones held, as an OCI runtime would.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import posixpath
import tarfile
from dataclasses import dataclass, field

from ..cachedir import default_cache_dir
from ..errors import InvalidInput
from ..fsutil import atomic_write
from ..oci.image import Image, visit_layer_members
from ..oci.layer import image_path

TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "arm": "arm-linux-gnueabihf"}
TRIPLETS |= {
    "386": "i386-linux-gnu",
    "ppc64le": "powerpc64le-linux-gnu",
    "s390x": "s390x-linux-gnu",
}
TRIPLETS |= {"riscv64": "riscv64-linux-gnu"}

_FORMAT = 1  # of the cached record


@dataclass
class BaseFiles:
    """Paths (no leading ``/``) of a base's files, and its symlinks with their targets."""

    files: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    ld_conf: dict[str, str] = field(default_factory=dict)  # /etc/ld.so.conf{,.d/*.conf} texts

    def to_json(self) -> dict:
        return {
            "format": _FORMAT,
            "files": sorted(self.files),
            "links": dict(sorted(self.links.items())),
            "ld_conf": dict(sorted(self.ld_conf.items())),
        }

    @classmethod
    def from_json(cls, obj: dict) -> BaseFiles:
        return cls(set(obj["files"]), dict(obj["links"]), dict(obj.get("ld_conf", {})))

    def conf_dirs(self) -> list[str]:
        """The directories ``ld.so.conf`` and its ``include``d files name, in their order."""
        out: list[str] = []

        def read(name: str, depth: int) -> None:
            for line in self.ld_conf.get(name, "").splitlines():
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                if line.startswith("include ") and depth < 4:
                    pattern = image_path(line[len("include ") :].strip().lstrip("/"))
                    for inc in sorted(fnmatch.filter(self.ld_conf, pattern)):
                        read(inc, depth + 1)
                elif line.startswith("/"):
                    out.append(line.rstrip("/") or "/")

        if "etc/ld.so.conf" in self.ld_conf:
            read("etc/ld.so.conf", 0)
        else:  # no ld.so.conf: glibc's own include of its .d folder is what bases have
            for name in sorted(self.ld_conf):
                read(name, 1)
        return list(dict.fromkeys(out))


def _ld_conf(path: str) -> bool:
    return path == "etc/ld.so.conf" or (
        path.startswith("etc/ld.so.conf.d/") and path.endswith(".conf")
    )


def scan(image: Image) -> BaseFiles:
    """One streaming pass over the layers' tar headers."""
    found = BaseFiles()

    def visit(_desc, tar: tarfile.TarFile, ti: tarfile.TarInfo) -> None:
        path = image_path(ti.name) if ti.name.strip("./") else ""
        if not path:
            return
        head, _, base = path.rpartition("/")
        if base.startswith(".wh."):
            _whiteout(found, head, base)
            return
        found.files.discard(path)
        found.links.pop(path, None)
        if ti.issym():
            found.links[path] = ti.linkname
        elif ti.isreg() or ti.islnk():
            found.files.add(path)
            if _ld_conf(path) and ti.isreg() and ti.size < (1 << 20):
                f = tar.extractfile(ti)
                found.ld_conf[path] = f.read().decode("utf-8", errors="replace")

    visit_layer_members(image, visit, "the base")
    return found


def _whiteout(found: BaseFiles, head: str, base: str) -> None:
    if base == ".wh..wh..opq":
        prefix = head + "/"
        hidden = lambda k: k.startswith(prefix)  # noqa: E731
    else:
        gone = (head + "/" if head else "") + base[4:]
        hidden = lambda k: k == gone or k.startswith(gone + "/")  # noqa: E731
    found.files = {k for k in found.files if not hidden(k)}
    for table in (found.links, found.ld_conf):
        for k in [k for k in table if hidden(k)]:
            del table[k]


def base_files(image: Image, cache: bool = True) -> BaseFiles:
    """The base's files, scanned once per set of layers (kept in the cache by their digests)."""
    key = hashlib.sha256(
        "\n".join(d.digest for d in image.layers).encode() + b"\nformat %d" % _FORMAT
    ).hexdigest()
    path = default_cache_dir() / "bases" / "files" / f"{key}.json"
    if cache and path.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return BaseFiles.from_json(json.loads(path.read_text()))
    found = scan(image)
    if cache:
        with contextlib.suppress(OSError, InvalidInput):
            atomic_write(path, json.dumps(found.to_json(), separators=(",", ":")), mkdir=True)
    return found


class Tree:
    """Which paths exist in an image, following its symlinks the way the kernel does."""

    def __init__(self, files: set[str], links: dict[str, str]) -> None:
        self.files = files
        self.links = links

    def resolve(self, path: str, depth: int = 0) -> str | None:
        """The file ``path`` (absolute, or relative to ``/``) reaches, or None when it is absent
        (a dangling or looping link, or a name nothing provides)."""
        if depth > 40:
            return None
        parts = [p for p in path.split("/") if p and p != "."]
        done: list[str] = []
        for i, part in enumerate(parts):
            if part == "..":
                if done:
                    done.pop()
                continue
            cur = "/".join([*done, part])
            target = self.links.get(cur)
            if target is not None:
                base = "" if target.startswith("/") else "/".join(done)
                rest = "/".join(parts[i + 1 :])
                joined = (
                    posixpath.join(base, target, rest) if rest else posixpath.join(base, target)
                )
                return self.resolve(joined, depth + 1)
            done.append(part)
        out = "/".join(done)
        return out if out in self.files else None
