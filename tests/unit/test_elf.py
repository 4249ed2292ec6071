"""Unit tests for lab.elf: GNU build IDs from real ELF files and from note blobs."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from lab.elf import NT_GNU_BUILD_ID, build_id_from_elf, build_id_from_notes

needs_toolchain = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("readelf") is None,
    reason="needs gcc and readelf (binutils) on the host",
)


def compile_c(tmp_path: Path, *flags: str) -> Path:
    out = tmp_path / "a.out"
    subprocess.run(["gcc", *flags, "-x", "c", "-", "-o", str(out)],
                   input="int main(){return 0;}\n", text=True, check=True,
                   capture_output=True)
    return out


def readelf_build_id(path: Path) -> str | None:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True,
                         check=True).stdout
    match = re.search(r"Build ID:\s*([0-9a-f]+)", out)
    return match.group(1) if match else None


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note: header, then name and desc each padded to 4 bytes."""
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


# --------------------------------------------------------------------------- real ELF files


@needs_toolchain
@pytest.mark.parametrize(("style", "length"), [("sha1", 20), ("md5", 16)])
def test_build_id_of_a_real_elf_matches_readelf(tmp_path: Path, style: str,
                                                length: int) -> None:
    elf = compile_c(tmp_path, f"-Wl,--build-id={style}")
    expected = readelf_build_id(elf)
    assert expected is not None
    assert len(expected) == 2 * length
    assert build_id_from_elf(elf) == expected


@needs_toolchain
def test_explicit_build_id(tmp_path: Path) -> None:
    elf = compile_c(tmp_path, "-Wl,--build-id=0xdeadbeef00112233")
    assert build_id_from_elf(elf) == "deadbeef00112233" == readelf_build_id(elf)


@needs_toolchain
def test_elf_without_build_id(tmp_path: Path) -> None:
    elf = compile_c(tmp_path, "-Wl,--build-id=none")
    assert readelf_build_id(elf) is None
    assert build_id_from_elf(elf) is None


def test_non_elf_file(tmp_path: Path) -> None:
    path = tmp_path / "script.sh"
    path.write_text("#!/bin/sh\necho not an ELF file, but long enough to have 64 bytes....\n")
    assert build_id_from_elf(path) is None


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert build_id_from_elf(path) is None


def test_32_bit_elf_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "elf32"
    path.write_bytes(b"\x7fELF\x01\x01\x01" + b"\0" * 57)
    assert build_id_from_elf(path) is None


def test_truncated_elf_header(tmp_path: Path) -> None:
    path = tmp_path / "truncated"
    path.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9)
    assert build_id_from_elf(path) is None


# --------------------------------------------------------------------------- note blobs


def test_gnu_note_after_other_notes() -> None:
    build_id = bytes(range(20))
    blob = (
        note(b"Xen\0", 6, b"\x01\x02\x03")  # other owner, odd desc size (padded)
        + note(b"Linux\0", NT_GNU_BUILD_ID, b"not-this")  # same type, other owner
        + note(b"GNU\0", 1, b"\0" * 16)  # GNU ABI tag: GNU, other type
        + note(b"GNU\0", NT_GNU_BUILD_ID, build_id)
    )
    assert build_id_from_notes(blob) == build_id.hex()


def test_first_gnu_build_id_wins() -> None:
    blob = note(b"GNU\0", NT_GNU_BUILD_ID, b"\xaa" * 20) + note(
        b"GNU\0", NT_GNU_BUILD_ID, b"\xbb" * 20)
    assert build_id_from_notes(blob) == "aa" * 20


def test_name_without_terminating_nul() -> None:
    assert build_id_from_notes(note(b"GNU", NT_GNU_BUILD_ID, b"\x12\x34")) == "1234"


def test_blobs_without_a_gnu_build_id() -> None:
    assert build_id_from_notes(b"") is None
    assert build_id_from_notes(b"\0" * 11) is None  # shorter than one note header
    assert build_id_from_notes(note(b"Xen\0", 3, b"\x01" * 8)) is None
    assert build_id_from_notes(note(b"GNU\0", 4, b"\x01" * 8)) is None


def test_trailing_padding_is_ignored() -> None:
    blob = note(b"GNU\0", NT_GNU_BUILD_ID, b"\x01\x02\x03\x04") + b"\0" * 24
    assert build_id_from_notes(blob) == "01020304"


@needs_toolchain
def test_notes_section_of_a_real_elf(tmp_path: Path) -> None:
    """The raw .note.gnu.build-id section, like /sys/kernel/notes, walks the same way."""
    if shutil.which("objcopy") is None:
        pytest.skip("needs objcopy (binutils)")
    elf = compile_c(tmp_path, "-Wl,--build-id=sha1")
    raw = tmp_path / "notes.bin"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.note.gnu.build-id",
                    str(elf), str(raw)], check=True, capture_output=True)
    assert build_id_from_notes(raw.read_bytes()) == readelf_build_id(elf)
