"""What a shared library asks of the dynamic loader, read from its ELF headers.

    read_elf(f)        # ElfInfo (needed, soname, rpath, runpath, machine) or None: not an ELF file
    read_elf_path(p)   # the same for a file on disk

Only what the loader reads is read: the ELF header, the program headers (the section headers
when there is no ``PT_DYNAMIC``), the dynamic segment and the few strings of its string table
that it names. ``f`` is any seekable binary stream, a wheel's zip member included: the reads go
forward except one seek back to the string table (which sits near the start), so a deflated
member is inflated about once and never held in memory. ELF32 and ELF64, either byte order.

Anything that is not a well-formed ELF file with the ``\\x7fELF`` magic is an
:class:`~ociforge.errors.InvalidInput` naming what is wrong; a file without the magic is None.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import InvalidInput

MAGIC = b"\x7fELF"

PT_LOAD, PT_DYNAMIC = 1, 2
SHT_DYNAMIC = 6
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29

MACHINES = {3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 40: "arm", 62: "x86_64"}
MACHINES |= {183: "aarch64", 243: "riscv64", 258: "loongarch64"}

MAX_DYNAMIC = 1 << 16  # entries of a dynamic segment (real ones have tens)
MAX_STRING = 4096  # bytes of one needed name or search path
MAX_HEADERS = 1 << 16  # program or section headers


@dataclass(frozen=True)
class ElfInfo:
    """The dynamic-linking facts of one ELF file."""

    bits: int  # 32 or 64
    little_endian: bool
    machine: int  # e_machine
    type: int  # e_type: 2 executable, 3 shared object / PIE
    needed: tuple[str, ...] = ()
    soname: str | None = None
    rpath: tuple[str, ...] = ()  # DT_RPATH, split at ':'
    runpath: tuple[str, ...] = ()  # DT_RUNPATH, split at ':'
    dynamic: bool = False  # has a dynamic segment at all

    @property
    def arch(self) -> str:
        return MACHINES.get(self.machine, f"machine {self.machine}")


class _Reader:
    def __init__(self, f: BinaryIO, what: str) -> None:
        self.f, self.what = f, what
        self.pos = None

    def at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0:
            raise InvalidInput(f"{self.what}: bad ELF offset {offset}")
        if self.pos != offset:
            self.f.seek(offset)
        data = self.f.read(n)
        self.pos = offset + len(data)
        if len(data) != n:
            raise InvalidInput(
                f"{self.what}: truncated ELF file ({n} bytes wanted at offset {offset})"
            )
        return data

    def cstr(self, offset: int, limit: int) -> str:
        """The NUL-terminated string at ``offset``, read in small pieces (at most ``limit``)."""
        out = b""
        while True:
            want = min(256, limit - len(out))
            if want <= 0:
                raise InvalidInput(f"{self.what}: unterminated string in the ELF string table")
            if self.pos != offset + len(out):
                self.f.seek(offset + len(out))
            chunk = self.f.read(want)
            self.pos = offset + len(out) + len(chunk)
            if not chunk:
                raise InvalidInput(f"{self.what}: ELF string table runs past the end of the file")
            nul = chunk.find(b"\0")
            if nul >= 0:
                return (out + chunk[:nul]).decode("utf-8", errors="surrogateescape")
            out += chunk


def read_elf(f: BinaryIO, what: str = "file") -> ElfInfo | None:
    """The dynamic-linking facts of the ELF file ``f`` (seekable), or None when it is not ELF."""
    try:
        return _read(_Reader(f, what))
    except InvalidInput:
        raise
    except (struct.error, ValueError, OverflowError, EOFError, OSError) as e:
        raise InvalidInput(f"{what}: unreadable ELF file ({e})") from None


def read_elf_path(path: str | os.PathLike) -> ElfInfo | None:
    with open(path, "rb") as f:
        return read_elf(f, str(path))


def _read(r: _Reader) -> ElfInfo | None:
    r.f.seek(0)
    r.pos = 0
    ident = r.f.read(16)
    r.pos = len(ident)
    if len(ident) < 4 or ident[:4] != MAGIC:
        return None
    if len(ident) < 16:
        raise InvalidInput(f"{r.what}: truncated ELF header")
    cls, data = ident[4], ident[5]
    if cls not in (1, 2):
        raise InvalidInput(f"{r.what}: unknown ELF class {cls}")
    if data not in (1, 2):
        raise InvalidInput(f"{r.what}: unknown ELF byte order {data}")
    e = "<" if data == 1 else ">"
    is64 = cls == 2
    if is64:
        fields = struct.unpack(e + "HHIQQQIHHHHHH", r.at(16, 48))
    else:
        fields = struct.unpack(e + "HHIIIIIHHHHHH", r.at(16, 36))
    (
        e_type,
        machine,
        _v,
        _entry,
        phoff,
        shoff,
        _flags,
        _ehs,
        phentsize,
        phnum,
        shentsize,
        shnum,
        _,
    ) = fields
    base = dict(bits=64 if is64 else 32, little_endian=data == 1, machine=machine, type=e_type)

    ph_fmt = e + ("IIQQQQQQ" if is64 else "IIIIIIII")
    ph_size = struct.calcsize(ph_fmt)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dyn: tuple[int, int] | None = None  # (offset, size)
    if phoff and phnum:
        if phentsize < ph_size or phnum > MAX_HEADERS:
            raise InvalidInput(f"{r.what}: bad ELF program headers ({phnum} of {phentsize} bytes)")
        table = r.at(phoff, phentsize * phnum)
        for i in range(phnum):
            p = struct.unpack_from(ph_fmt, table, i * phentsize)
            if is64:
                p_type, _fl, p_offset, p_vaddr, _pa, p_filesz = p[:6]
            else:
                p_type, p_offset, p_vaddr, _pa, p_filesz = p[:5]
            if p_type == PT_LOAD:
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == PT_DYNAMIC and dyn is None:
                dyn = (p_offset, p_filesz)
    strtab_offset: int | None = None
    if dyn is None and shoff and shnum:  # no program headers: the sections say it
        dyn, strtab_offset = _dynamic_from_sections(r, e, is64, shoff, shentsize, shnum)
    if dyn is None:
        return ElfInfo(**base)

    d_fmt = e + ("qQ" if is64 else "iI")
    d_size = struct.calcsize(d_fmt)
    count = min(dyn[1] // d_size, MAX_DYNAMIC)
    raw = r.at(dyn[0], count * d_size)
    entries: list[tuple[int, int]] = []
    for i in range(count):
        tag, val = struct.unpack_from(d_fmt, raw, i * d_size)
        if tag == DT_NULL:
            break
        entries.append((tag, val))
    strtab = next((v for t, v in entries if t == DT_STRTAB), None)
    strsz = next((v for t, v in entries if t == DT_STRSZ), None)
    wanted = [(t, v) for t, v in entries if t in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH)]
    if not wanted:
        return ElfInfo(**base, dynamic=True)
    if strtab_offset is None:
        if strtab is None:
            raise InvalidInput(f"{r.what}: ELF dynamic segment has no string table")
        strtab_offset = _file_offset(r, loads, strtab)
    strings: dict[int, str] = {}
    for off in sorted({v for _t, v in wanted}):  # ascending: one pass forward
        if strsz is not None and off >= strsz:
            raise InvalidInput(f"{r.what}: ELF string offset {off} beyond its table ({strsz})")
        limit = MAX_STRING if strsz is None else min(MAX_STRING, strsz - off)
        strings[off] = r.cstr(strtab_offset + off, limit)
    needed = tuple(strings[v] for t, v in wanted if t == DT_NEEDED)
    soname = next((strings[v] for t, v in wanted if t == DT_SONAME), None)

    def paths(tag: int) -> tuple[str, ...]:
        return tuple(p for t, v in wanted if t == tag for p in strings[v].split(":") if p)

    return ElfInfo(
        **base,
        needed=needed,
        soname=soname,
        rpath=paths(DT_RPATH),
        runpath=paths(DT_RUNPATH),
        dynamic=True,
    )


def _file_offset(r: _Reader, loads: list[tuple[int, int, int]], addr: int) -> int:
    for vaddr, offset, filesz in loads:
        if vaddr <= addr < vaddr + filesz:
            return addr - vaddr + offset
    if not loads:  # an object with no loadable segments: addresses are file offsets
        return addr
    raise InvalidInput(f"{r.what}: ELF string table address {addr:#x} is in no loaded segment")


def _dynamic_from_sections(
    r: _Reader, e: str, is64: bool, shoff: int, shentsize: int, shnum: int
) -> tuple[tuple[int, int] | None, int | None]:
    sh_fmt = e + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
    sh_size = struct.calcsize(sh_fmt)
    if shentsize < sh_size or shnum > MAX_HEADERS:
        raise InvalidInput(f"{r.what}: bad ELF section headers ({shnum} of {shentsize} bytes)")
    table = r.at(shoff, shentsize * shnum)
    sections = [struct.unpack_from(sh_fmt, table, i * shentsize) for i in range(shnum)]
    for s in sections:
        _name, sh_type, _fl, _addr, sh_offset, sh_size_, sh_link = s[:7]
        if sh_type == SHT_DYNAMIC:
            if sh_link >= shnum:
                raise InvalidInput(f"{r.what}: ELF dynamic section links to no section")
            return (sh_offset, sh_size_), sections[sh_link][4]
    return None, None
