"""Write tiny ELF shared objects for tests: headers, one PT_LOAD, a dynamic segment and its
string table (no code). Enough for the dynamic loader's view that ociforge.python.elf reads."""

from __future__ import annotations

import struct

EM = {"x86_64": 62, "aarch64": 183, "i386": 3, "arm": 40, "ppc64": 21, "s390x": 22}


def make_elf(
    needed: tuple[str, ...] = (),
    *,
    soname: str | None = None,
    rpath: str | None = None,
    runpath: str | None = None,
    bits: int = 64,
    little: bool = True,
    machine: str = "x86_64",
    vaddr: int = 0x10000,
    sections_only: bool = False,
) -> bytes:
    """An ET_DYN ELF file whose dynamic segment names ``needed`` and the rest.

    ``sections_only``: no program headers, the dynamic section found by section headers."""
    e = "<" if little else ">"
    is64 = bits == 64
    ehsize = 64 if is64 else 52
    phentsize = 56 if is64 else 32
    shentsize = 64 if is64 else 40
    dentsize = 16 if is64 else 8
    phnum = 0 if sections_only else 2

    strtab = b"\0"
    offsets: dict[str, int] = {}

    def add(s: str) -> int:
        nonlocal strtab
        if s not in offsets:
            offsets[s] = len(strtab)
            strtab += s.encode() + b"\0"
        return offsets[s]

    entries = [(1, add(n)) for n in needed]
    if soname:
        entries.append((14, add(soname)))
    if rpath:
        entries.append((15, add(rpath)))
    if runpath:
        entries.append((29, add(runpath)))
    strtab_off = ehsize + phnum * phentsize
    dyn_off = strtab_off + len(strtab)
    dyn_off += (-dyn_off) % 8
    base = 0 if sections_only else vaddr
    entries += [(5, base + strtab_off), (10, len(strtab)), (0, 0)]
    dfmt = e + ("qQ" if is64 else "iI")
    dynamic = b"".join(struct.pack(dfmt, t, v) for t, v in entries)
    end = dyn_off + len(dynamic)
    shoff = end + (-end) % 8 if sections_only else 0
    shnum = 3 if sections_only else 0
    total = shoff + shnum * shentsize if sections_only else end

    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if little else 2, 1, 0]) + b"\0" * 8
    hfmt = e + ("HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH")
    header = ident + struct.pack(
        hfmt, 3, EM[machine], 1, 0, ehsize if phnum else 0, shoff, 0, ehsize,
        phentsize, phnum, shentsize, shnum, 0,
    )  # fmt: skip
    out = bytearray(total)
    out[: len(header)] = header
    if phnum:
        pfmt = e + ("IIQQQQQQ" if is64 else "IIIIIIII")

        def ph(p_type, offset, addr, size, flags):
            if is64:
                return struct.pack(pfmt, p_type, flags, offset, addr, addr, size, size, 8)
            return struct.pack(pfmt, p_type, offset, addr, addr, size, size, flags, 8)

        table = ph(1, 0, vaddr, total, 6) + ph(2, dyn_off, vaddr + dyn_off, len(dynamic), 6)
        out[ehsize : ehsize + len(table)] = table
    out[strtab_off : strtab_off + len(strtab)] = strtab
    out[dyn_off:end] = dynamic
    if sections_only:
        sfmt = e + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
        secs = [
            struct.pack(sfmt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
            struct.pack(sfmt, 0, 3, 2, 0, strtab_off, len(strtab), 0, 0, 1, 0),  # .dynstr
            struct.pack(sfmt, 0, 6, 3, 0, dyn_off, len(dynamic), 1, 0, 8, dentsize),  # .dynamic
        ]
        out[shoff:total] = b"".join(secs)
    return bytes(out)
