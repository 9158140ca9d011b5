"""The shell layer of a modelcar: Debian's ``busybox-static`` for one architecture.

KServe's classic ``oci://`` mode runs the modelcar as a sidecar with
``sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"`` and checks it with
``ls -A /models``, so the image needs ``sh``, ``ln``, ``ls`` and ``sleep`` for the node's
architecture. The package is resolved from the signed Debian index into a lock committed beside
``modelcar-shell.toml`` (``locks/``), downloaded and checked against its sha256, and its
``/bin/busybox`` streamed from the ``.deb`` into a layer, as :mod:`ociforge.bases` does for every
package; ``/bin/sh``, ``ln``, ``ls``, ``sleep`` (and a few more applets) link to it. The layer's
time stamps are the lock's date, so it is the same bytes on any machine and any day.
"""

from __future__ import annotations

from pathlib import Path

from ..bases import base, debian
from ..errors import InvalidInput
from ..oci.blobstore import BlobStore
from ..oci.layer import Entry, Layer, write_layer
from ..oci.layercache import memo_key, memoized
from ..oci.platform import Platform

RECIPE = Path(__file__).resolve().parent / "modelcar-shell.toml"
PACKAGE = "busybox-static"
APPLETS = ("sh", "ln", "ls", "sleep", "cat", "test", "[")
FORMAT = "1"
PATH_ENV = "/bin"


def recipe() -> base.Recipe:
    return base.load_recipe(RECIPE)


def shell_layer(
    platform: Platform | str, store: BlobStore, *, mirror: str | None = None, offline: bool = False
) -> tuple[Layer, str]:
    """The busybox layer for ``platform`` (cached by the .deb's sha256), and what it holds."""
    platform = Platform.parse(platform)
    r = recipe()
    arch = platform.debian_arch
    if arch not in r.architectures:
        raise InvalidInput(
            f"a modelcar's shell exists for {', '.join('linux/' + a for a in r.architectures)}, "
            f"not {platform}"
        )
    lock = base.lock_for(r, arch, mirror=mirror, offline=offline)
    pkg = lock.package(PACKAGE)
    if pkg is None:
        raise InvalidInput(f"{r.lock_path(arch)} does not hold {PACKAGE}")
    key = memo_key("modelcar-shell", FORMAT, pkg.sha256, lock.date, APPLETS)
    what = f"{pkg.name}_{pkg.version}_{pkg.architecture}.deb"

    def make() -> Layer:
        if offline and not (debian.deb_cache_dir() / f"{pkg.sha256}.deb").is_file():
            from ..errors import MissingInputs

            raise MissingInputs([f"{what} (sha256 {pkg.sha256})"], "ociforge fetch")
        path = debian.fetch_deb(base.mirror_for(r, mirror), pkg)
        data = debian.DebData(path, what)
        try:
            wanted = {
                "usr/bin/busybox": "bin/busybox",
                f"usr/share/doc/{PACKAGE}/copyright": f"usr/share/doc/{PACKAGE}/copyright",
            }
            entries = []
            for e in debian.deb_entries(data):
                if e.kind == "file" and e.path in wanted:
                    entries.append(Entry(wanted.pop(e.path), "file", e.mode, size=e.size,
                                         opener=e.opener))  # fmt: skip
            if "usr/bin/busybox" in wanted:
                raise InvalidInput(f"{what} holds no /bin/busybox")
            entries += [Entry.symlink(f"bin/{a}", "busybox") for a in APPLETS]
            entries += [Entry.dir("tmp", 0o1777), Entry.dir("mnt", 0o755)]
            return write_layer(entries, store, "gzip", epoch=lock.date)
        finally:
            data.close()

    layer = memoized(store, key, make)
    return layer, f"busybox-static {pkg.version} ({arch})"
