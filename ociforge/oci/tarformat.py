"""The bytes of a tar stream: ustar headers, PAX records where ustar cannot hold a value.

The output is byte for byte what Python's ``tarfile`` writes in ``PAX_FORMAT`` with UTF-8
names (tested against it), so layers keep their digests; it is written here because
``tarfile.addfile`` copies the ``TarInfo``, builds an info dict and checks every field for
every member, about 70 us each: a third of the Python time of writing a wheel layer of small
files. Owning the format also keeps a layer's bytes independent of the builder's Python version.

Only what layers hold is written: regular files, directories, symlinks and hard links, with
empty user and group names and no device numbers.
"""

from __future__ import annotations

BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the end of the stream to a whole record of 20 blocks

REGTYPE = b"0"
LNKTYPE = b"1"
SYMTYPE = b"2"
DIRTYPE = b"5"
_XHDTYPE = b"x"
_MAGIC = b"ustar\x0000"
_NUL8 = bytes(8)
_EMPTY_TAIL = bytes(32 + 32 + 8 + 8 + 155 + 12)  # uname, gname, devices, prefix; to 512

_NAME_MAX = 100
_LINK_MAX = 100
_ID_LIMIT = 8**7  # 8-byte octal fields: 7 digits and a NUL
_BIG_LIMIT = 8**11  # 12-byte octal fields (size, mtime)


def _octal(n: int, digits: int) -> bytes:
    return b"%0*o\x00" % (digits - 1, n)


def _block(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes,
           linkname: bytes) -> bytes:  # fmt: skip
    buf = b"".join(
        (
            name[:_NAME_MAX].ljust(_NAME_MAX, b"\x00"),
            _octal(mode & 0o7777, 8),
            _octal(uid, 8),
            _octal(gid, 8),
            _octal(size, 12),
            _octal(mtime, 12),
            b"        ",  # the checksum is summed with its own field as spaces
            kind,
            linkname[:_LINK_MAX].ljust(_LINK_MAX, b"\x00"),
            _MAGIC,
            _EMPTY_TAIL,
        )
    )
    return b"%s%06o\x00%s" % (buf[:148], sum(buf), buf[155:])


def _pax(records: dict[str, str]) -> bytes:
    """A PAX extended header block and its records, padded to whole blocks."""
    try:
        encoded = [(k.encode(), v.encode("utf-8", "strict")) for k, v in records.items()]
        out = b""
    except UnicodeEncodeError:  # a name that was not valid UTF-8 on disk (surrogateescape)
        encoded = [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in records.items()]
        out = b"21 hdrcharset=BINARY\n"
    for key, value in encoded:
        body = len(key) + len(value) + 3  # " ", "=" and "\n"
        n = p = 0
        while True:  # the length field counts its own digits
            n = body + len(str(p))
            if n == p:
                break
            p = n
        out += b"%d %s=%s\n" % (p, key, value)
    head = _block(b"././@PaxHeader", 0, 0, 0, len(out), 0, _XHDTYPE, b"")
    return head + out + padding(len(out))


def header(
    name: str,
    kind: bytes,
    *,
    mode: int,
    size: int = 0,
    mtime: int = 0,
    uid: int = 0,
    gid: int = 0,
    linkname: str = "",
) -> bytes:
    """The header blocks of one member."""
    if kind == DIRTYPE and not name.endswith("/"):
        name += "/"
    records: dict[str, str] = {}
    if not name.isascii() or len(name) > _NAME_MAX:
        records["path"] = name
    if not linkname.isascii() or len(linkname) > _LINK_MAX:
        records["linkpath"] = linkname
    fields = {"uid": uid, "gid": gid, "size": size, "mtime": mtime}
    for key, limit in (("uid", _ID_LIMIT), ("gid", _ID_LIMIT), ("size", _BIG_LIMIT),
                       ("mtime", _BIG_LIMIT)):  # fmt: skip
        value = fields[key]
        if not 0 <= value < limit:
            records[key] = str(value)
            fields[key] = 0
    block = _block(
        name.encode("ascii", "replace"),
        mode,
        fields["uid"],
        fields["gid"],
        fields["size"],
        fields["mtime"],
        kind,
        linkname.encode("ascii", "replace"),
    )
    return _pax(records) + block if records else block


def padding(size: int) -> bytes:
    """The NULs that fill a member's last block."""
    return bytes(-size % BLOCK)


def end(offset: int) -> bytes:
    """The end of the archive after ``offset`` bytes: two empty blocks, then NULs to a record."""
    offset += 2 * BLOCK
    return bytes(2 * BLOCK + (-offset % RECORD))
