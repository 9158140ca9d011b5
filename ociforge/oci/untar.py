"""Unpacking a tar stream from outside into a folder, and never outside it.

A tar that came from elsewhere (a layer of a bundle) is hostile until shown otherwise: a member
named ``../x`` or ``/etc/x``, a symlink to ``/`` with a file written through it, a hardlink to a
file elsewhere, a second member written over a link the first one made, setuid bits, a member
count or a size meant to fill the disk. :func:`extract` holds to these rules, whatever the stream:

* every member's name goes through :func:`~ociforge.oci.layer.image_path`, the check the layer
  writer uses (``..`` and NUL refused, a leading ``/`` means the image root), and may not be
  longer than ``PATH_MAX``;
* every directory is opened relative to its parent's descriptor with ``O_NOFOLLOW`` and every file
  is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: nothing is opened through a symlink and
  nothing that exists is overwritten;
* a path that appears twice, or below something that is not a directory, is refused, and so are
  devices, fifos and every other special file;
* a hardlink must name a regular file that the same stream put under ``dest`` before it;
* a symlink must be relative and, resolved through every other symlink of the stream, stay inside
  ``dest``; symlinks are made last, so no member is ever written through one;
* modes are masked to ``0o777`` (no setuid, setgid or sticky bit survives);
* :class:`Limits` caps the members read and the bytes written: :data:`MAX_MEMBERS` and
  :data:`MAX_BYTES` unless the caller sets others (one :class:`Limits` can span several streams).

A refused stream raises :class:`UnsafeArchive` naming the member. Files already written stay
inside ``dest``, the caller's scratch folder, for the caller to remove.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard
from zlib_ng import zlib_ng

from ..errors import InvalidInput
from .layer import image_path

MAX_MEMBERS = 200_000  # members read from the streams of one extraction, in all
MAX_BYTES = 64 << 30  # bytes of file content written by one extraction, in all (64 GiB)
_MAX_HOPS = 40  # symlinks followed while resolving one path (Linux's own limit)
_MAX_NAME = 4096  # PATH_MAX: a longer name cannot be made, and would cost memory to check
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
# what reading a damaged stream raises: tarfile's, the decompressors' and the file's own errors
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, zlib_ng.error, zstandard.ZstdError, OSError)


class UnsafeArchive(InvalidInput):
    """A tar whose member would land outside its folder, or that is over the limits: refused."""


@dataclass
class Limits:
    """How much one extraction may read and write; the counts go up as streams are read."""

    max_members: int = MAX_MEMBERS
    max_bytes: int = MAX_BYTES
    members: int = 0
    bytes: int = 0


def _resolves_inside(links: dict[str, str], path: str) -> bool:
    """Whether ``path`` (relative to the root) stays inside the root when every symlink of
    ``links`` on the way is followed, as the kernel would; a loop counts as outside."""
    todo = path.split("/")
    here: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return False
            here.pop()
            continue
        here.append(part)
        target = links.get("/".join(here))
        if target is not None:
            hops += 1
            if hops > _MAX_HOPS or target.startswith("/"):
                return False
            here.pop()
            todo = target.split("/") + todo
    return True


def copy_member(tf: tarfile.TarFile, m: tarfile.TarInfo, out: BinaryIO, what: str) -> None:
    """Stream a regular member's content into ``out`` (chunked: memory stays flat); a member
    whose bytes cannot be read (truncated, corrupt compression) is named with ``what``."""
    src = tf.extractfile(m)
    while src is not None:
        try:
            chunk = src.read(_CHUNK)
        except _READ_ERRORS as e:
            raise InvalidInput(f"{what}: member {m.name!r} cannot be read: {e}") from None
        if not chunk:
            break
        out.write(chunk)


class _Extraction:
    def __init__(self, dest: Path | None, prefix: str, limits: Limits, what: str) -> None:
        self.dest = dest
        self.prefix = image_path(prefix)
        self.limits = limits
        self.what = what
        self.kinds: dict[str, str] = {}  # rel path -> file, dir, symlink, hardlink
        self.parents: set[str] = set()  # every directory some member is inside
        self.links: dict[str, str] = {}  # rel path -> symlink target
        self.names: dict[str, str] = {}  # rel path of a symlink -> its member name
        self.dir_modes: dict[str, int] = {}
        self._root: int | None = None

    def refuse(self, member: str, why: str) -> UnsafeArchive:
        where = f"; nothing was written outside {self.dest}" if self.dest is not None else ""
        return UnsafeArchive(f"{self.what}: member {member!r} {why}: refused{where}")

    # -- the checks, the same with or without a folder to write into

    def relative(self, m: tarfile.TarInfo) -> str | None:
        """The member's path under ``dest``, or None when it is outside the prefix."""
        if len(m.name) > _MAX_NAME or len(m.linkname) > _MAX_NAME:
            raise self.refuse(m.name[:200], f"has a name or link longer than {_MAX_NAME} bytes")
        try:
            name = image_path(m.name, "name")
        except InvalidInput:
            why = "has a NUL byte" if "\x00" in m.name else "escapes the folder ('..')"
            raise self.refuse(m.name, why) from None
        if not self.prefix:
            return name
        if name == self.prefix:
            return ""
        if name.startswith(self.prefix + "/"):
            return name[len(self.prefix) + 1 :]
        return None

    def check(self, m: tarfile.TarInfo, rel: str) -> str:
        lim = self.limits
        if rel in self.kinds:
            raise self.refuse(m.name, "appears twice in the stream")
        if rel in self.parents and not m.isdir():
            raise self.refuse(m.name, "is where an earlier member's folder is")
        parts = rel.split("/") if rel else []
        if parts and self.kinds.get("", "dir") != "dir":
            raise self.refuse(m.name, f"is inside {self.prefix!r}, a {self.kinds['']}")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if self.kinds.get(above, "dir") != "dir":
                raise self.refuse(m.name, f"is inside {above!r}, a {self.kinds[above]}")
        if m.isreg():
            kind = "file"
            if m.size > lim.max_bytes - lim.bytes:
                raise self.refuse(
                    m.name,
                    f"takes the content past the limit of {lim.max_bytes} bytes "
                    f"(raise it with max_bytes / --max-bytes if this is expected)",
                )
            lim.bytes += m.size
        elif m.isdir():
            kind = "dir"
        elif m.issym():
            kind = "symlink"
            target = m.linkname
            if not rel:
                raise self.refuse(m.name, "is a symlink where a file or folder must be")
            if not target or "\x00" in target or target.startswith("/"):
                raise self.refuse(m.name, f"is a symlink to {target!r}, outside the folder")
            self.links[rel] = target
            self.names[rel] = m.name
        elif m.islnk():
            kind = "hardlink"
            if not rel:
                raise self.refuse(m.name, "is a hardlink where a file or folder must be")
            try:
                link = image_path(m.linkname, "hardlink target")
            except InvalidInput as e:
                raise self.refuse(m.name, str(e)) from None
            to = self._under_prefix(link)
            if to is None or self.kinds.get(to) not in ("file", "hardlink"):
                raise self.refuse(
                    m.name,
                    f"is a hardlink to {m.linkname!r}, not a file extracted before it",
                )
        else:
            raise self.refuse(m.name, "is a device, fifo or other special file")
        self.kinds[rel] = kind
        self.parents.update("/".join(parts[:i]) for i in range(len(parts)))  # "" is dest
        return kind

    def _under_prefix(self, name: str) -> str | None:
        if not self.prefix:
            return name
        if name.startswith(self.prefix + "/"):
            return name[len(self.prefix) + 1 :]
        return None

    def check_links(self) -> None:
        for rel, target in sorted(self.links.items()):
            if rel in self.parents:
                raise self.refuse(self.names[rel], "is a symlink with other members inside it")
            if not _resolves_inside(self.links, rel):
                raise self.refuse(
                    self.names[rel], f"is a symlink to {target!r}, which leads outside the folder"
                )

    # -- writing, relative to directory descriptors

    def _root_fd(self) -> int:
        if self._root is None:
            assert self.dest is not None
            os.makedirs(self.dest, exist_ok=True)
            self._root = os.open(self.dest, _DIR_FLAGS)
        return self._root

    def _parent(self, rel: str, member: str) -> tuple[int, str]:
        """A descriptor of ``rel``'s folder (made where missing, never through a symlink) and
        ``rel``'s last component; the caller closes the descriptor."""
        *dirs, base = rel.split("/")
        fd = os.dup(self._root_fd())
        try:
            for part in dirs:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self.refuse(
                            member, f"is inside {part!r}, which is not a folder"
                        ) from None
                    raise
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd, base

    def write(self, tf: tarfile.TarFile, m: tarfile.TarInfo, rel: str, kind: str) -> None:
        assert self.dest is not None
        mode = m.mode & 0o777
        if kind == "dir":
            if rel:
                fd, base = self._parent(rel, m.name)
                try:
                    os.mkdir(base, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # made as the parent of an earlier member (checked: a folder)
                finally:
                    os.close(fd)
            else:
                self._root_fd()
            self.dir_modes[rel] = mode
        elif kind == "file":
            if rel:
                fd, base = self._parent(rel, m.name)
                try:
                    out = os.open(base, _FILE_FLAGS, 0o600, dir_fd=fd)
                finally:
                    os.close(fd)
            else:
                self.dest.parent.mkdir(parents=True, exist_ok=True)
                out = os.open(self.dest, _FILE_FLAGS, 0o600)
            with os.fdopen(out, "wb") as f:
                copy_member(tf, m, f, self.what)
                os.fchmod(f.fileno(), mode)
        elif kind == "hardlink":
            to = self._under_prefix(image_path(m.linkname))
            assert to is not None
            sfd, sbase = self._parent(to, m.name)
            try:
                dfd, dbase = self._parent(rel, m.name)
                try:
                    os.link(sbase, dbase, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)

    def finish(self) -> None:
        """Make the symlinks, then give each folder its mode (deepest first)."""
        if self.dest is None:
            return
        for rel, target in sorted(self.links.items()):
            fd, base = self._parent(rel, rel)
            try:
                os.symlink(target, base, dir_fd=fd)
            finally:
                os.close(fd)
        for rel, mode in sorted(self.dir_modes.items(), key=lambda kv: -kv[0].count("/")):
            if rel:
                pfd, base = self._parent(rel, rel)
                try:
                    fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
                finally:
                    os.close(pfd)
            else:
                fd = os.dup(self._root_fd())
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def close(self) -> None:
        if self._root is not None:
            os.close(self._root)
            self._root = None


def extract(
    stream: BinaryIO,
    dest: str | os.PathLike | None,
    prefix: str = "",
    *,
    limits: Limits | None = None,
    what: str = "archive",
) -> dict[str, str]:
    """Unpack the members of the uncompressed tar ``stream`` under ``prefix`` into ``dest`` (the
    member at ``prefix`` itself becomes ``dest``), by the rules of this module. With ``dest``
    None, nothing is written: the stream is only checked. Returns each path written (relative to
    ``dest``) with its kind; raises :class:`UnsafeArchive` naming the first member refused, or
    :class:`~ociforge.errors.InvalidInput` when the stream is not a readable tar."""
    limits = limits if limits is not None else Limits()
    job = _Extraction(Path(dest) if dest is not None else None, prefix, limits, what)
    try:
        try:
            tf = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed below
        except _READ_ERRORS as e:
            raise InvalidInput(f"{what} is not a readable tar: {e}") from None
        with tf:
            members = iter(tf)
            while True:
                try:
                    m = next(members)
                except StopIteration:
                    break
                except _READ_ERRORS as e:
                    raise InvalidInput(f"{what} is not a readable tar: {e}") from None
                limits.members += 1
                if limits.members > limits.max_members:
                    raise job.refuse(
                        m.name,
                        f"is past the limit of {limits.max_members} members "
                        f"(raise it with max_members / --max-members if this is expected)",
                    )
                rel = job.relative(m)
                if rel is None:
                    continue
                kind = job.check(m, rel)
                if job.dest is not None and kind != "symlink":
                    try:
                        job.write(tf, m, rel, kind)
                    except OSError as e:
                        raise InvalidInput(
                            f"{what}: cannot write member {m.name!r} into {job.dest}: "
                            f"{e.strerror or e}"
                        ) from None
        job.check_links()
        try:
            job.finish()
        except OSError as e:
            raise InvalidInput(f"{what}: cannot finish {job.dest}: {e.strerror or e}") from None
    finally:
        job.close()
    return dict(job.kinds)
