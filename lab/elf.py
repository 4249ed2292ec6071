"""GNU build IDs from ELF files and from raw note blobs such as /sys/kernel/notes."""

from __future__ import annotations

import struct
from pathlib import Path

NT_GNU_BUILD_ID = 3
PT_NOTE = 4


def build_id_from_notes(blob: bytes) -> str | None:
    """Walk a sequence of ELF notes (4-byte aligned) and return the GNU build ID in hex."""
    offset = 0
    while offset + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, offset)
        offset += 12
        name = blob[offset:offset + namesz]
        offset += (namesz + 3) & ~3
        desc = blob[offset:offset + descsz]
        offset += (descsz + 3) & ~3
        if ntype == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU":
            return desc.hex()
    return None


def build_id_from_elf(path: Path) -> str | None:
    """Read only the ELF header and PT_NOTE segments (the debug vmlinux is ~350 MB)."""
    with path.open("rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2:  # 64-bit only
            return None
        phoff, = struct.unpack_from("<Q", ident, 32)
        phentsize, phnum = struct.unpack_from("<HH", ident, 54)
        f.seek(phoff)
        headers = f.read(phentsize * phnum)
        if phentsize < 56 or len(headers) < phentsize * phnum:  # truncated or not ELF64
            return None
        for i in range(phnum):
            ptype, _flags, p_offset, _vaddr, _paddr, filesz = struct.unpack_from(
                "<IIQQQQ", headers, i * phentsize)
            if ptype == PT_NOTE:
                f.seek(p_offset)
                found = build_id_from_notes(f.read(filesz))
                if found:
                    return found
    return None
