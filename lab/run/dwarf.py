"""Record types from a probe object's DWARF, for layouts clang left out of its BTF.

clang keeps a struct in a BPF object's BTF only when a map or global uses it, but the
DWARF (``-g``) has every type the source declares. Upstream tools rarely add the BTF
trick, so the lab reads the DWARF on the host (pyelftools, the way pahole does) and
turns it into the same type table bpftool's BTF JSON gives, so one decoder serves both::

    own, table = record_types(Path("probe.bpf.o"))
    # own: the structs the probe's own files declare; table: {"types": [...]} with
    # DIE offsets as ids, the shape lab.run.events reads
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile

from lab.errors import LabError

# DWARF base type encodings (DW_ATE_*) that are not plain unsigned integers.
_SIGNED = {0x05, 0x06, 0x0D}  # signed, signed_char, signed_fixed
_BOOL = 0x02
_FLOAT = 0x04
_MODIFIERS = {"DW_TAG_typedef": "TYPEDEF", "DW_TAG_const_type": "CONST",
              "DW_TAG_volatile_type": "VOLATILE", "DW_TAG_restrict_type": "RESTRICT"}
_HEADERS = ("vmlinux.h", "bpf_helper_defs.h", "bpf_helpers.h", "bpf_tracing.h",
            "bpf_core_read.h", "bpf_endian.h")


@dataclass(frozen=True)
class OwnStruct:
    """A struct declared in the probe's own sources (not vmlinux.h or libbpf's headers)."""

    name: str
    size: int
    type_id: int


def _name(die: DIE) -> str:
    attr = die.attributes.get("DW_AT_name")
    return attr.value.decode("utf-8", "replace") if attr else ""


def _int_attr(die: DIE, name: str, default: int = 0) -> int:
    attr = die.attributes.get(name)
    return int(attr.value) if attr is not None and isinstance(attr.value, int) else default


def _type_id(die: DIE) -> int:
    """The DIE offset of the referenced type (0 = void), the BTF-style id."""
    attr = die.attributes.get("DW_AT_type")
    if attr is None:
        return 0
    return int(die.get_DIE_from_attribute("DW_AT_type").offset)


def _array_count(die: DIE) -> int:
    count = 1
    for sub in die.iter_children():
        if sub.tag != "DW_TAG_subrange_type":
            continue
        if "DW_AT_count" in sub.attributes:
            count *= _int_attr(sub, "DW_AT_count")
        elif "DW_AT_upper_bound" in sub.attributes:
            count *= _int_attr(sub, "DW_AT_upper_bound") + 1
        else:
            count *= 0  # flexible array member: no storage
    return count


def _convert(die: DIE) -> dict[str, Any] | None:
    """One DIE as a bpftool-JSON-like type entry, or None for what records never hold."""
    entry: dict[str, Any] = {"id": int(die.offset), "name": _name(die)}
    tag = die.tag
    if tag == "DW_TAG_base_type":
        encoding = _int_attr(die, "DW_AT_encoding")
        entry["size"] = _int_attr(die, "DW_AT_byte_size")
        if encoding == _FLOAT:
            entry["kind"] = "FLOAT"
        else:
            entry["kind"] = "INT"
            entry["encoding"] = ("BOOL" if encoding == _BOOL else
                                 "SIGNED" if encoding in _SIGNED else "(none)")
    elif tag == "DW_TAG_pointer_type":
        entry.update(kind="PTR", type_id=_type_id(die))
    elif tag in _MODIFIERS:
        entry.update(kind=_MODIFIERS[tag], type_id=_type_id(die))
    elif tag == "DW_TAG_array_type":
        entry.update(kind="ARRAY", type_id=_type_id(die), nr_elems=_array_count(die))
    elif tag == "DW_TAG_enumeration_type":
        values = [{"name": _name(e), "val": _int_attr(e, "DW_AT_const_value")}
                  for e in die.iter_children() if e.tag == "DW_TAG_enumerator"]
        entry.update(kind="ENUM", size=_int_attr(die, "DW_AT_byte_size", 4), values=values)
    elif tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
        members = []
        for m in die.iter_children():
            if m.tag != "DW_TAG_member":
                continue
            member: dict[str, Any] = {"name": _name(m), "type_id": _type_id(m)}
            if "DW_AT_data_bit_offset" in m.attributes:
                member["bits_offset"] = _int_attr(m, "DW_AT_data_bit_offset")
            else:
                member["bits_offset"] = 8 * _int_attr(m, "DW_AT_data_member_location")
            if "DW_AT_bit_size" in m.attributes:
                member["bitfield_size"] = _int_attr(m, "DW_AT_bit_size")
            members.append(member)
        entry.update(kind="STRUCT" if tag == "DW_TAG_structure_type" else "UNION",
                     size=_int_attr(die, "DW_AT_byte_size"), vlen=len(members),
                     members=members)
    else:
        return None
    return entry


def _referenced(die: DIE) -> list[DIE]:
    """The DIEs a type entry points at (its type, its members' types)."""
    found = []
    if "DW_AT_type" in die.attributes:
        found.append(die.get_DIE_from_attribute("DW_AT_type"))
    for child in die.iter_children():
        if child.tag == "DW_TAG_member" and "DW_AT_type" in child.attributes:
            found.append(child.get_DIE_from_attribute("DW_AT_type"))
    return found


def record_types(path: Path) -> tuple[list[OwnStruct], dict[str, list[dict[str, Any]]]]:
    """The structs the probe's own files declare, and the type table they need.

    Only the compile units' top-level entries are scanned and only what the own
    structs reference is converted: an object built against vmlinux.h carries
    thousands of kernel types the records never use.
    """
    own: list[OwnStruct] = []
    table: dict[int, dict[str, Any]] = {}
    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                return [], {"types": []}
            dwarf = elf.get_dwarf_info()
            for cu in dwarf.iter_CUs():
                program = dwarf.line_program_for_CU(cu)
                files = ([e.name.decode("utf-8", "replace") for e in program.header.file_entry]
                         if program is not None else [])
                if cu["version"] < 5:  # DWARF 4 numbers files from 1, DWARF 5 from 0
                    files.insert(0, "")
                for die in cu.get_top_DIE().iter_children():
                    if _is_own_struct(die, files):
                        own.append(OwnStruct(_name(die), _int_attr(die, "DW_AT_byte_size"),
                                             int(die.offset)))
                        _collect(die, table)
    except (ELFError, OSError, KeyError, ValueError, AttributeError) as exc:
        raise LabError(f"Could not read the DWARF of {path.name}: {exc}") from None
    return own, {"types": list(table.values())}


def _is_own_struct(die: DIE, files: list[str]) -> bool:
    if die.tag != "DW_TAG_structure_type" or not _name(die):
        return False
    if "DW_AT_declaration" in die.attributes:
        return False
    index = _int_attr(die, "DW_AT_decl_file", -1)
    declared_in = files[index] if 0 <= index < len(files) else ""
    return bool(declared_in) and not declared_in.startswith("/usr/") \
        and Path(declared_in).name not in _HEADERS


def _collect(root: DIE, table: dict[int, dict[str, Any]]) -> None:
    pending = [root]
    while pending:
        die = pending.pop()
        if int(die.offset) in table:
            continue
        entry = _convert(die)
        if entry is None:
            continue
        table[int(die.offset)] = entry
        if entry["kind"] != "PTR":  # a pointer is read as an address: no need to follow
            pending.extend(_referenced(die))
