"""Tar archives of images: ``oci-archive:FILE[:TAG]`` (an OCI layout in one tar file).

Reading never extracts: members are located once and each blob is read through its own file
handle at its offset, so several blobs can stream at once and memory stays flat. Writing builds
the new archive beside the destination and renames it into place, so a failure leaves the old
archive as it was. A writer holds a lock (``flock`` on ``.FILE.lock`` beside the archive,
removed when released) from reading the old archive to renaming the new one into place, so two
writers of one archive keep each other's tags; what a killed writer left (its staging folder
``.FILE.staging``) is removed by the next one.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from ..errors import InvalidInput, NotFound
from ..fsutil import locked, remove_stale, staging_file
from ..oci.image import Image, ImageIndex, load
from ..oci.layer import Entry, entries_from_tree, write_tar
from ..oci.manifest import Descriptor, Index
from .layout import REF_NAME, find_descriptor, read_layout, validate_tag, write_layout


class _Slice(io.RawIOBase):
    """A read-only window ``[offset, offset+size)`` of a file, with its own handle."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._f.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._left <= 0:
            return 0
        n = self._f.readinto(memoryview(b)[: min(len(b), self._left)])
        self._left -= n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


class TarSource:
    """Members of an uncompressed tar file by name, without extracting it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.members: dict[str, tuple[int, int]] = {}
        try:
            with tarfile.open(self.path, "r:") as tf:
                for m in tf:
                    if m.isfile():
                        self.members[m.name.lstrip("./")] = (m.offset_data, m.size)
        except FileNotFoundError:
            raise NotFound(f"{self.path} does not exist") from None
        except (tarfile.TarError, OSError) as e:
            raise InvalidInput(f"{self.path} is not a readable tar archive: {e}") from None

    def has_member(self, name: str) -> bool:
        return name in self.members

    def open_member(self, name: str) -> BinaryIO:
        try:
            offset, size = self.members[name]
        except KeyError:
            raise NotFound(f"{name} is missing from {self.path}") from None
        return io.BufferedReader(_Slice(self.path, offset, size), buffer_size=1 << 20)

    def read_member(self, name: str, limit: int = 64 << 20) -> bytes:
        with self.open_member(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidInput(f"{name} in {self.path} is larger than {limit} bytes")
        return data

    # BlobSource protocol: blobs at blobs/<alg>/<hex>
    def has(self, digest: str) -> bool:
        return self.has_member("blobs/" + digest.replace(":", "/", 1))

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        name = "blobs/" + desc.digest.replace(":", "/", 1)
        if name not in self.members:
            raise NotFound(f"blob {desc.digest} is missing from {self.path}")
        return self.open_member(name)


def read_layout_in_tar(src: TarSource, tag: str | None) -> Image | ImageIndex:
    try:
        index = Index.from_json(json.loads(src.read_member("index.json")))
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"{src.path}: invalid index.json: {e}") from None
    return load(src, find_descriptor(index, tag, f"archive {src.path}"))


def read_oci_archive(path: str | os.PathLike, tag: str | None = None) -> Image | ImageIndex:
    src = TarSource(path)
    if not src.has_member("oci-layout"):
        raise InvalidInput(f"{path} is not an OCI archive (no oci-layout file)")
    return read_layout_in_tar(src, tag)


def tar_directory(root: Path, dest: Path, extra: list[Entry] | None = None) -> None:
    """Write the tree at ``root`` as a deterministic uncompressed tar at ``dest`` (atomic)."""
    fd, tmp = staging_file(dest.parent, f".{dest.name}.")  # locked until in place
    with os.fdopen(fd, "wb") as f:
        try:
            entries = [e for e in entries_from_tree(root) if not e.path.startswith(".tmp")]
            write_tar(entries + list(extra or []), f)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o644)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _check_folder(dest: Path) -> Path:
    parent = dest.parent
    if not parent.is_dir():
        raise InvalidInput(f"cannot write {dest}: {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise InvalidInput(f"cannot write {dest}: {parent} is not writable")
    return parent


def _staging_dir(dest: Path) -> Path:
    parent = _check_folder(dest)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=parent))
    except OSError as e:
        raise InvalidInput(f"cannot write {dest}: {e.strerror or e}") from None


def write_oci_archive(
    obj: Image | ImageIndex, path: str | os.PathLike, tag: str | None = None
) -> Descriptor:
    """Write ``obj`` into the OCI archive at ``path``, keeping the archive's other tags."""
    dest = Path(path)
    if tag is not None:
        validate_tag(tag)
    if dest.is_dir():
        raise InvalidInput(f"{dest} is a directory; an oci-archive is a file")
    parent = _check_folder(dest)
    with locked(parent / f".{dest.name}.lock"):
        # one writer of this archive at a time: a staging folder found here is a killed writer's,
        # and so is an unlocked half-written archive (tar_directory's staging file)
        stage = parent / f".{dest.name}.staging"
        shutil.rmtree(stage, ignore_errors=True)
        remove_stale(parent, re.escape(f".{dest.name}.") + r"[A-Za-z0-9_]{8}")
        try:
            stage.mkdir()
        except OSError as e:
            raise InvalidInput(f"cannot write {dest}: {e.strerror or e}") from None
        return _write_archive(obj, dest, tag, stage)


def _write_archive(obj: Image | ImageIndex, dest: Path, tag: str | None, stage: Path) -> Descriptor:
    try:
        layout = stage / "layout"
        if dest.exists():
            src = TarSource(dest)
            if not src.has_member("oci-layout"):
                raise InvalidInput(f"{dest} exists and is not an OCI archive; not overwriting it")
            index = Index.from_json(json.loads(src.read_member("index.json")))
            for d in index.manifests:
                old_tag = d.annotations.get(REF_NAME)
                if old_tag and old_tag != tag:
                    write_layout(read_layout_in_tar(src, old_tag), layout, old_tag, durable=False)
        desc = write_layout(obj, layout, tag, durable=False)  # staging: the tar is fsynced
        # Keep the index entries in a stable order: other tags first, then the new one.
        tar_directory(layout, dest)
        return desc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def read_any_layout(path: str | os.PathLike, tag: str | None = None) -> Image | ImageIndex:
    """A directory layout or an archive, whichever ``path`` is."""
    p = Path(path)
    return read_layout(p, tag) if p.is_dir() else read_oci_archive(p, tag)
