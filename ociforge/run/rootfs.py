"""An image's layers unpacked into one folder, the way a container engine stacks them, and never
anything written outside that folder.

The layers come from anywhere ociforge reads (a registry, an archive someone sent), so each one
is hostile until shown otherwise. Unlike :mod:`ociforge.oci.untar` (one stream, nothing
overwritten, relative symlinks only), an image's layers overwrite and delete what the layers below
them put there, and an image is full of absolute symlinks (``/var/run -> /run``), which are fine
*inside* the image. The rules here:

* every member name goes through :func:`~ociforge.oci.layer.image_path` (``..`` and NUL refused,
  a leading ``/`` is the image root);
* a member's folders are walked one at a time from the root's descriptor with ``O_NOFOLLOW``; a
  symlink met on the way (``lib -> usr/lib``, a layer's own ``/bin/x`` under a merged ``/usr``)
  is followed *inside the tree*, as the kernel would in a chroot (an absolute target starts again
  at the tree's root), and one that would climb above the root with ``..`` is refused: no write
  ever goes through a symlink the kernel resolves;
* the last component is never followed: an existing entry is removed (a folder kept when the
  member is a folder too) and the new one made with ``O_CREAT | O_EXCL | O_NOFOLLOW``;
* whiteouts (``.wh.NAME``) remove what lower layers put at ``NAME``; an opaque marker
  (``.wh..wh..opq``) empties its folder of what lower layers put there;
* hardlinks must name a regular file already in the tree; devices are skipped (bubblewrap gives
  the sandbox its own ``/dev``), fifos are made;
* modes lose their setuid and setgid bits (a tree in a cache folder must not hold a setuid binary
  a local user could run); owners are not copied: bubblewrap maps the caller's uid to the image's
  user, so a tree owned by the caller reads, inside the sandbox, as the image's user's own;
* :class:`~ociforge.oci.untar.Limits` caps the members read and the bytes written;
* each layer's bytes are hashed as they are read and must match its digest.

:func:`cached` keeps one tree per image digest under the cache folder: unpacked into a
``.partial`` folder under a lock, renamed into place when complete, so a half-unpacked tree is
never used and a refused image leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path

from ..cachedir import default_cache_dir
from ..errors import InvalidInput
from ..fsutil import locked
from ..oci.digest import VerifyingReader
from ..oci.layer import decompressor, image_path
from ..oci.untar import _READ_ERRORS, Limits, UnsafeArchive, copy_member

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_HOPS = 40  # symlinks followed while resolving one path (Linux's own limit)
_CHUNK = 1 << 20
_OPAQUE = ".wh..wh..opq"
# where bubblewrap mounts things: made in the tree, so that starting a sandbox writes nothing there
MOUNT_POINTS = ("proc", "dev", "tmp")


class _Tree:
    """A folder being filled: every path resolved from the root's descriptor, never through a
    symlink the kernel follows."""

    def __init__(self, root: Path, what: str) -> None:
        self.root = root
        self.what = what
        root.mkdir(parents=True, exist_ok=True)
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.dir_attrs: dict[str, tuple[int, int]] = {}  # resolved folder -> (mode, mtime)
        self._last: tuple[str, int, str] | None = None  # (parent as named, fd, resolved)

    def close(self) -> None:
        self.forget()
        os.close(self.root_fd)

    def forget(self) -> None:
        """Drop the remembered folder: something was removed or replaced."""
        if self._last is not None:
            os.close(self._last[1])
            self._last = None

    def refuse(self, member: str, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self.what}: member {member!r} {why}: refused")

    # -- resolving

    def _open_real(self, parts: list[str]) -> int:
        """A descriptor of the real folder ``parts`` (no symlink on the way)."""
        fd = os.dup(self.root_fd)
        try:
            for part in parts:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    def folder(self, parent: str, member: str, create: bool) -> tuple[int, str] | None:
        """A descriptor of the folder ``parent`` names (made where missing when ``create``;
        None when missing and not) and its resolved path; the caller closes the descriptor.
        Members come parents first, so the last folder is remembered until something is
        removed (which could change what a name resolves to)."""
        if self._last is None or self._last[0] != parent:
            got = self._resolve(parent, member, create)
            if got is None:
                return None
            self.forget()
            self._last = (parent, got[0], got[1])
        return os.dup(self._last[1]), self._last[2]

    def _resolve(self, parent: str, member: str, create: bool) -> tuple[int, str] | None:
        todo = [p for p in parent.split("/") if p]
        done: list[str] = []
        hops = 0
        fd = os.dup(self.root_fd)
        try:
            while todo:
                part = todo.pop(0)
                if part == ".":
                    continue
                if part == "..":
                    if not done:
                        raise self.refuse(member, "leads outside the image through a symlink")
                    done.pop()
                    os.close(fd)
                    fd = self._open_real(done)
                    continue
                try:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > _MAX_HOPS:
                        raise self.refuse(member, "is below a loop of symlinks")
                    target = os.readlink(part, dir_fd=fd)
                    if target.startswith("/"):  # absolute: from the image's root, as in a chroot
                        done = []
                        os.close(fd)
                        fd = os.dup(self.root_fd)
                    todo = [p for p in target.split("/") if p] + todo
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    where = "/".join([*done, part])
                    raise self.refuse(member, f"is inside {where!r}, which is not a folder")
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
                done.append(part)
        except BaseException:
            os.close(fd)
            raise
        return fd, "/".join(done)

    # -- changing

    def remove(self, fd: int, name: str, rel: str) -> None:
        """Remove ``name`` (``rel`` in the tree) in the folder ``fd``, whatever it is (a folder
        with what it holds, and the modes recorded for the folders in it)."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        self.forget()
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=fd)
            below = rel + "/"
            for gone in [k for k in self.dir_attrs if k == rel or k.startswith(below)]:
                del self.dir_attrs[gone]
        else:
            os.unlink(name, dir_fd=fd)

    def empty(self, fd: int, resolved: str, keep: set[str]) -> None:
        """Remove what ``fd``'s folder holds, less the paths in ``keep`` (this layer's own)."""
        for name in os.listdir(fd):
            rel = f"{resolved}/{name}" if resolved else name
            if rel not in keep:
                self.remove(fd, name, rel)


def _mode(m: tarfile.TarInfo, folder: bool) -> int:
    """The member's permissions without setuid/setgid (the sticky bit kept for folders: /tmp)."""
    return m.mode & (0o1777 if folder else 0o777)


class _Layer:
    """One layer's members applied to the tree."""

    def __init__(self, tree: _Tree, limits: Limits) -> None:
        self.tree = tree
        self.limits = limits
        self.written: set[str] = set()  # resolved paths this layer made (whiteouts spare them)

    def apply(self, tf: tarfile.TarFile) -> None:
        for m in _members(tf, self.tree.what):
            self.limits.members += 1
            if self.limits.members > self.limits.max_members:
                raise self.tree.refuse(
                    m.name, f"is past the limit of {self.limits.max_members} members"
                )
            self.member(tf, m)

    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        tree = self.tree
        try:
            name = image_path(m.name, "name")
        except InvalidInput:
            why = "has a NUL byte" if "\x00" in m.name else "escapes the image root ('..')"
            raise tree.refuse(m.name, why) from None
        if not name:
            return  # the root itself: its mode stays the tree's
        parent, _, base = name.rpartition("/")
        got = tree.folder(parent, m.name, create=not base.startswith(".wh."))
        if got is None:
            return  # a whiteout in a folder no lower layer made: nothing to hide
        fd, resolved = got
        try:
            if base == _OPAQUE:
                tree.empty(fd, resolved, self.written)
            elif base.startswith(".wh."):
                hidden = base[4:]
                rel = f"{resolved}/{hidden}" if resolved else hidden
                if hidden not in ("", ".", "..") and rel not in self.written:
                    tree.remove(fd, hidden, rel)
            else:
                rel = f"{resolved}/{base}" if resolved else base
                self.written.add(rel)
                self._make(tf, m, fd, base, rel)
        except OSError as e:
            raise InvalidInput(
                f"{tree.what}: cannot write member {m.name!r} into {tree.root}: {e.strerror or e}"
            ) from None
        finally:
            os.close(fd)

    def _make(self, tf: tarfile.TarFile, m: tarfile.TarInfo, fd: int, base: str, rel: str) -> None:
        tree = self.tree
        if m.isdir():
            try:
                st = os.stat(base, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    tree.remove(fd, base, rel)
                    os.mkdir(base, 0o755, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(base, 0o755, dir_fd=fd)
            tree.dir_attrs[rel] = (_mode(m, True), int(m.mtime))
            return
        tree.remove(fd, base, rel)
        if m.isreg():
            if m.size > self.limits.max_bytes - self.limits.bytes:
                raise tree.refuse(
                    m.name, f"takes the content past the limit of {self.limits.max_bytes} bytes"
                )
            self.limits.bytes += m.size
            out = os.open(base, _FILE_FLAGS, 0o600, dir_fd=fd)
            with os.fdopen(out, "wb") as f:
                copy_member(tf, m, f, tree.what)
                os.fchmod(f.fileno(), _mode(m, False))
                os.utime(f.fileno(), (m.mtime, m.mtime))
        elif m.issym():
            if not m.linkname or "\x00" in m.linkname:
                raise tree.refuse(m.name, f"is a symlink to {m.linkname!r}")
            os.symlink(m.linkname, base, dir_fd=fd)
            with contextlib.suppress(OSError):
                os.utime(base, (m.mtime, m.mtime), dir_fd=fd, follow_symlinks=False)
        elif m.islnk():
            self._hardlink(m, fd, base)
        elif m.isfifo():
            os.mkfifo(base, _mode(m, False), dir_fd=fd)
        # character and block devices: the sandbox has its own /dev

    def _hardlink(self, m: tarfile.TarInfo, fd: int, base: str) -> None:
        tree = self.tree
        try:
            target = image_path(m.linkname, "hardlink target")
        except InvalidInput:
            raise tree.refuse(
                m.name, f"is a hardlink to {m.linkname!r}, outside the image"
            ) from None
        tparent, _, tbase = target.rpartition("/")
        got = tree._resolve(tparent, m.name, create=False) if tbase else None
        if got is None:
            raise tree.refuse(m.name, f"is a hardlink to {m.linkname!r}, which is not in the image")
        sfd = got[0]
        try:
            try:
                st = os.stat(tbase, dir_fd=sfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                raise tree.refuse(
                    m.name, f"is a hardlink to {m.linkname!r}, not a file of the image"
                )
            os.link(tbase, base, src_dir_fd=sfd, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(sfd)


def _members(tf: tarfile.TarFile, what: str) -> Iterable[tarfile.TarInfo]:
    members = iter(tf)
    while True:
        try:
            m = next(members)
        except StopIteration:
            return
        except _READ_ERRORS as e:
            raise InvalidInput(f"{what} is not a readable tar: {e}") from None
        yield m


def _finish(tree: _Tree, mount_points: Iterable[str]) -> None:
    """Make the mount points bubblewrap needs where missing (a name starting with ``.`` is a
    file to bind onto), then give each folder its mode and time, deepest first (a read-only
    folder is filled before it is made read-only)."""
    tree.forget()
    for name in mount_points:
        with contextlib.suppress(FileExistsError):
            if name.startswith("."):
                os.close(os.open(name, _FILE_FLAGS, 0o644, dir_fd=tree.root_fd))
            else:
                os.mkdir(name, 0o700, dir_fd=tree.root_fd)
                os.chmod(name, 0o1777 if name == "tmp" else 0o755, dir_fd=tree.root_fd)
    for rel, (mode, mtime) in sorted(tree.dir_attrs.items(), key=lambda kv: -kv[0].count("/")):
        try:
            fd = tree._open_real(rel.split("/"))
        except OSError:
            continue  # removed or replaced by a later layer
        try:
            os.fchmod(fd, mode)
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)


def unpack(
    image,
    dest: str | os.PathLike,
    *,
    limits: Limits | None = None,
    mount_points: Iterable[str] = MOUNT_POINTS,
) -> Path:
    """Unpack the layers of ``image`` (an :class:`~ociforge.oci.image.Image`, any source) in
    order into ``dest`` (made; it may exist, empty), by the rules of this module. Returns
    ``dest``. A refused layer raises :class:`~ociforge.oci.untar.UnsafeArchive` naming the
    member, a layer whose bytes do not match its digest
    :class:`~ociforge.errors.DigestMismatch`; what was written stays inside ``dest``, for the
    caller to remove (:func:`cached` does)."""
    root = Path(dest)
    if root.is_dir() and any(root.iterdir()):
        raise InvalidInput(f"{root}: not empty; an image is unpacked into an empty folder")
    limits = limits if limits is not None else Limits()
    tree = _Tree(root, f"image {image.digest}")
    try:
        for desc in image.layers:
            tree.what = f"layer {desc.digest}"
            raw = image.open_layer(desc)
            try:
                hashed = VerifyingReader(raw, desc.digest, f"layer {desc.digest}")
                try:
                    stream = decompressor(hashed, desc.media_type)
                    tf = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed below
                except _READ_ERRORS as e:
                    raise InvalidInput(f"layer {desc.digest} is not a readable tar: {e}") from None
                with tf:
                    _Layer(tree, limits).apply(tf)
                while hashed.read(_CHUNK):  # the rest of the blob (tar and gzip padding)
                    pass
                hashed.verify()
            finally:
                raw.close()
        tree.what = f"image {image.digest}"
        _finish(tree, mount_points)
    finally:
        tree.close()
    return root


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a tree this module made, read-only folders in it too; nothing when it is gone."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    if os.geteuid() != 0:  # root removes from read-only folders; anyone else opens them first
        for folder, _dirs, _files in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o700)
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise InvalidInput(f"cannot remove {path}")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`cached` keeps unpacked images: ``rootfs/`` of the cache folder."""
    return Path(cache_dir or default_cache_dir()) / "rootfs"


def cached(
    image, cache_dir: str | os.PathLike | None = None, *, mount_points: Iterable[str] = MOUNT_POINTS
) -> Path:
    """The tree of ``image`` in the cache (``rootfs/<digest hex>``), unpacked on first use.

    Several processes may ask at once: one unpacks (under a lock, into ``<hex>.partial``, renamed
    into place when complete), the others wait and take its tree. A tree is never used half
    unpacked, and a refused image leaves no entry.
    """
    algo, _, hexpart = image.digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise InvalidInput(f"image digest {image.digest!r}: not a sha256 digest")
    base = cache_root(cache_dir)
    final = base / hexpart
    if final.is_dir():
        return final
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInput(f"cannot write to {base}: {e.strerror or e}") from None
    with locked(base / f"{hexpart}.lock"):
        if final.is_dir():
            return final
        partial = base / f"{hexpart}.partial"
        remove_tree(partial)  # a killed unpack's (nobody else holds the lock)
        try:
            unpack(image, partial, mount_points=mount_points)
            os.rename(partial, final)
        except BaseException:
            remove_tree(partial)
            raise
    return final


def read_inside(root: str | os.PathLike, path: str, limit: int = 1 << 20) -> bytes | None:
    """The bytes of the regular file at ``path`` in the tree ``root`` (symlinks followed inside
    the tree, as in a chroot), at most ``limit``; None when there is none. For reading the
    image's ``/etc/passwd`` without ever following a link out of it."""
    tree = _Tree(Path(root), f"tree {root}")
    try:
        target = image_path(path)
        for _ in range(_MAX_HOPS):
            parent, _, base = target.rpartition("/")
            try:
                got = tree._resolve(parent, path, create=False)
            except (UnsafeArchive, OSError):
                return None
            if got is None or base in ("", ".", ".."):
                return None
            fd, resolved = got
            try:
                try:
                    st = os.stat(base, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return None
                if stat.S_ISLNK(st.st_mode):
                    link = os.readlink(base, dir_fd=fd)
                    target = link if link.startswith("/") else f"{resolved}/{link}"
                    continue
                if not stat.S_ISREG(st.st_mode):
                    return None
                with os.fdopen(
                    os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd), "rb"
                ) as f:
                    return f.read(limit)
            finally:
                os.close(fd)
        return None
    finally:
        tree.close()
