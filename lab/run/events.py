"""Decode BPF ring-buffer records with the BTF that clang put in the probe object.

A probe object's record layout (for the lab's own probes, ``struct event`` from
``bpf/acl/acl_event.h``) travels inside the object as BTF. ``bpftool -j btf dump
file X.bpf.o`` turns that into JSON, and :class:`EventDecoder` turns the JSON into
a reusable layout that decodes records (as printed in hex by ``lab-loader``) into
plain dicts, so new probes need no hand-written Python struct definitions::

    decoder = EventDecoder.from_btf_json(json.loads(btf_json_text))
    fields = decoder.decode(bytes.fromhex(line["data"]))

Decoding rules (records are little-endian, as on x86-64):

* ``INT``: ``int``, signed when bpftool reports the ``SIGNED`` encoding; the
  ``BOOL`` encoding gives ``bool``. ``FLOAT`` gives ``float``. ``PTR`` gives the
  address as an unsigned ``int``.
* ``ARRAY`` of a one-byte ``char`` / ``signed char`` / ``unsigned char``: ``str``,
  cut at the first NUL and decoded as UTF-8 with ``errors="replace"``. Any other
  ``ARRAY``: ``list``.
* ``ENUM`` / ``ENUM64``: the enumerator's name, or the plain ``int`` when the
  value has no enumerator.
* ``TYPEDEF``, ``CONST``, ``VOLATILE``, ``RESTRICT`` and ``TYPE_TAG`` are looked
  through.
* ``STRUCT`` and ``UNION``: nested ``dict``; every member of a union is decoded
  from the same bytes. Members of anonymous nested structs/unions are merged into
  the enclosing dict, as C lets you name them.
* Bitfields are decoded when the member carries ``bitfield_size`` (what clang
  emits). Old-style bitfields, described only by a member offset that is not a
  whole byte, are skipped.

Convention: a top-level field named ``retval`` is dropped when the record also
has a ``probe`` field that names an entry probe (``"fentry"``, ``"kprobe"``): it
runs before the traced function returns, so its ``retval`` slot holds no return
value. Any other record (fexit, kretprobe, no ``probe`` field) keeps ``retval``.

The layout is compiled once into a tree of small reader functions, so
:meth:`EventDecoder.decode` does no BTF lookups. A record may be longer than the
struct (trailing bytes are ignored); a shorter one raises :class:`BtfError`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping

from lab.errors import ScenarioError

__all__ = ["BtfError", "EventDecoder", "TypeTable"]

_Reader = Callable[[bytes, int], object]
_StructReader = Callable[[bytes, int], dict[str, object]]

_CHAR_NAMES = frozenset({"char", "signed char", "unsigned char"})
_MODIFIERS = frozenset({"TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"})
_ANON_NAMES = frozenset({"", "(anon)"})
_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLOAT_CODES = {4: "f", 8: "d"}
_PTR_SIZE = 8
ENTRY_PROBES = frozenset({"fentry", "kprobe"})


class BtfError(ScenarioError, ValueError):
    """The BTF JSON or a record does not fit what the decoder needs (exit 1)."""


def _describe(t: Mapping[str, object]) -> str:
    return f"BTF type {t.get('id')} ({t.get('kind')} {t.get('name')!r})"


def _get_int(t: Mapping[str, object], key: str) -> int:
    value = t.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BtfError(f"{_describe(t)}: missing integer field {key!r}")
    return value


def _get_str(t: Mapping[str, object], key: str) -> str:
    value = t.get(key)
    if not isinstance(value, str):
        raise BtfError(f"{_describe(t)}: missing string field {key!r}")
    return value


def _get_dicts(t: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    value = t.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BtfError(f"{_describe(t)}: missing list of objects {key!r}")
    return value


def _load_types(doc: object) -> dict[int, Mapping[str, object]]:
    if isinstance(doc, (str, bytes, bytearray)):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise BtfError(f"BTF JSON does not parse: {exc}") from exc
    hint = "expected the output of 'bpftool -j btf dump file OBJ'"
    if not isinstance(doc, dict) or not isinstance(doc.get("types"), list):
        raise BtfError(f"not bpftool BTF JSON (no top-level 'types' list); {hint}")
    types: dict[int, Mapping[str, object]] = {}
    for entry in doc["types"]:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("id"), int)
            or not isinstance(entry.get("kind"), str)
        ):
            raise BtfError(f"not bpftool BTF JSON (a type lacks 'id' or 'kind'); {hint}")
        types[entry["id"]] = entry
    return types


def _int_reader(size: int, signed: bool) -> Callable[[bytes, int], int]:
    code = _INT_CODES.get(size)
    if code is None:

        def read_wide(data: bytes, off: int) -> int:
            return int.from_bytes(data[off : off + size], "little", signed=signed)

        return read_wide
    unpack = struct.Struct("<" + (code if signed else code.upper())).unpack_from

    def read_int(data: bytes, off: int) -> int:
        value: int = unpack(data, off)[0]
        return value

    return read_int


def _bool_reader(size: int) -> _Reader:
    read = _int_reader(size, False)

    def read_bool(data: bytes, off: int) -> bool:
        return read(data, off) != 0

    return read_bool


def _float_reader(size: int) -> _Reader:
    unpack = struct.Struct("<" + _FLOAT_CODES[size]).unpack_from

    def read_float(data: bytes, off: int) -> float:
        value: float = unpack(data, off)[0]
        return value

    return read_float


def _enum_reader(size: int, signed: bool, names: dict[int, str]) -> _Reader:
    read = _int_reader(size, signed)

    def read_enum(data: bytes, off: int) -> object:
        value = read(data, off)
        return names.get(value, value)

    return read_enum


def _str_reader(length: int) -> _Reader:
    def read_str(data: bytes, off: int) -> str:
        raw = bytes(data[off : off + length])
        end = raw.find(b"\0")
        if end >= 0:
            raw = raw[:end]
        return raw.decode("utf-8", errors="replace")

    return read_str


def _list_reader(elem: _Reader, elem_size: int, count: int) -> _Reader:
    offsets = [i * elem_size for i in range(count)]

    def read_list(data: bytes, off: int) -> list[object]:
        return [elem(data, off + o) for o in offsets]

    return read_list


def _bits_reader(bit_off: int, bits: int, signed: bool, boolean: bool) -> _Reader:
    first = bit_off // 8
    shift = bit_off % 8
    nbytes = (shift + bits + 7) // 8
    mask = (1 << bits) - 1

    def read_bits(data: bytes, off: int) -> object:
        start = off + first
        value = (int.from_bytes(data[start : start + nbytes], "little") >> shift) & mask
        if boolean:
            return value != 0
        if signed and value >> (bits - 1):
            value -= 1 << bits
        return value

    return read_bits


class _LayoutBuilder:
    """Compiles BTF types into reader functions, caching one per type id."""

    def __init__(self, types: dict[int, Mapping[str, object]]) -> None:
        self._types = types
        self._cache: dict[int, tuple[_Reader, int]] = {}
        self._building: set[int] = set()

    def resolve(self, type_id: int) -> Mapping[str, object]:
        """The type behind type_id, with typedefs and qualifiers looked through."""
        for _ in range(len(self._types) + 1):
            if type_id == 0:
                raise BtfError("a member has type void, which has no layout")
            t = self._types.get(type_id)
            if t is None:
                raise BtfError(f"type id {type_id} is referenced but not in the BTF JSON")
            if t["kind"] not in _MODIFIERS:
                return t
            type_id = _get_int(t, "type_id")
        raise BtfError(f"typedef/qualifier loop at BTF type id {type_id}")

    def reader(self, type_id: int) -> tuple[_Reader, int]:
        """A reader for type_id and the type's size in bytes."""
        t = self.resolve(type_id)
        tid = _get_int(t, "id")
        cached = self._cache.get(tid)
        if cached is None:
            if tid in self._building:
                raise BtfError(f"{_describe(t)} contains itself")
            self._building.add(tid)
            try:
                cached = self._build(t)
            finally:
                self._building.discard(tid)
            self._cache[tid] = cached
        return cached

    def _build(self, t: Mapping[str, object]) -> tuple[_Reader, int]:
        kind = t["kind"]
        if kind == "INT":
            size = _get_int(t, "size")
            encoding = t.get("encoding")
            if encoding == "BOOL":
                return _bool_reader(size), size
            return _int_reader(size, encoding == "SIGNED"), size
        if kind == "PTR":
            return _int_reader(_PTR_SIZE, False), _PTR_SIZE
        if kind == "FLOAT":
            size = _get_int(t, "size")
            if size not in _FLOAT_CODES:
                raise BtfError(f"{_describe(t)}: unsupported float size {size}")
            return _float_reader(size), size
        if kind in ("ENUM", "ENUM64"):
            size = _get_int(t, "size")
            names = {_get_int(v, "val"): _get_str(v, "name") for v in _get_dicts(t, "values")}
            signed = t.get("encoding") == "SIGNED" or any(v < 0 for v in names)
            return _enum_reader(size, signed, names), size
        if kind == "ARRAY":
            return self._build_array(t)
        if kind in ("STRUCT", "UNION"):
            return self.struct_reader(t), _get_int(t, "size")
        raise BtfError(f"{_describe(t)}: cannot decode a field of kind {kind}")

    def _build_array(self, t: Mapping[str, object]) -> tuple[_Reader, int]:
        count = _get_int(t, "nr_elems")
        elem_type = self.resolve(_get_int(t, "type_id"))
        if (
            elem_type["kind"] == "INT"
            and elem_type.get("name") in _CHAR_NAMES
            and elem_type.get("size") == 1
        ):
            return _str_reader(count), count
        elem, elem_size = self.reader(_get_int(elem_type, "id"))
        return _list_reader(elem, elem_size, count), elem_size * count

    def struct_reader(self, t: Mapping[str, object]) -> _StructReader:
        """A reader that decodes a STRUCT or UNION into a dict."""
        fields: list[tuple[str, int, _Reader, bool]] = []
        for m in _get_dicts(t, "members"):
            name = _get_str(m, "name")
            bit_off = _get_int(m, "bits_offset")
            member_type = self.resolve(_get_int(m, "type_id"))
            bits = m.get("bitfield_size", 0)
            if isinstance(bits, int) and bits > 0:
                read = _bits_reader(
                    bit_off,
                    bits,
                    member_type.get("encoding") == "SIGNED",
                    member_type.get("encoding") == "BOOL",
                )
                fields.append((name, 0, read, False))
                continue
            if bit_off % 8:
                continue  # old-style bitfield: not decoded (see module docstring)
            read, _ = self.reader(_get_int(member_type, "id"))
            flatten = name in _ANON_NAMES and member_type["kind"] in ("STRUCT", "UNION")
            fields.append((name, bit_off // 8, read, flatten))

        def read_struct(data: bytes, off: int) -> dict[str, object]:
            out: dict[str, object] = {}
            for name, field_off, read, flatten in fields:
                value = read(data, off + field_off)
                if flatten and isinstance(value, dict):
                    out.update(value)
                else:
                    out[name] = value
            return out

        return read_struct


class EventDecoder:
    """Decodes ring-buffer records laid out as one BTF struct."""

    def __init__(self, struct_name: str, size: int, reader: _StructReader) -> None:
        self.struct_name = struct_name
        self.size = size
        self._read = reader

    @classmethod
    def from_btf_json(cls, doc: object, struct_name: str = "event") -> EventDecoder:
        """Build a decoder for ``struct <struct_name>`` from bpftool's BTF JSON.

        ``doc`` is the parsed output of ``bpftool -j btf dump file X.bpf.o`` (a
        ``str``/``bytes`` holding that JSON is parsed first).
        """
        types = _load_types(doc)
        candidates = [
            t for t in types.values() if t["kind"] == "STRUCT" and t.get("name") == struct_name
        ]
        if not candidates:
            raise BtfError(f"no struct {struct_name!r} in the BTF JSON")
        # Prefer a complete definition with members.
        candidates.sort(key=lambda t: t.get("vlen") == 0)
        root = candidates[0]
        builder = _LayoutBuilder(types)
        return cls(struct_name, _get_int(root, "size"), builder.struct_reader(root))

    def decode(self, data: bytes) -> dict[str, object]:
        """Decode one record; extra trailing bytes are ignored."""
        if len(data) < self.size:
            raise BtfError(
                f"record of {len(data)} bytes is shorter than struct {self.struct_name} "
                f"({self.size} bytes)"
            )
        fields = self._read(data, 0)
        probe = fields.get("probe")
        if "retval" in fields and probe in ENTRY_PROBES:
            del fields["retval"]
        return fields

    def decode_hex(self, text: str) -> dict[str, object]:
        """Decode a record given as hex, as lab-loader prints it."""
        try:
            data = bytes.fromhex(text)
        except ValueError as exc:
            raise BtfError(f"record is not valid hex: {exc}") from exc
        return self.decode(data)


class TypeTable:
    """Readers for any type of one object's type table (BTF JSON, or DWARF made alike)."""

    def __init__(self, doc: object) -> None:
        self.types = _load_types(doc)
        self._builder = _LayoutBuilder(self.types)

    def struct_id(self, name: str) -> int | None:
        """The id of the complete ``struct name``, or None."""
        found = [t for t in self.types.values()
                 if t["kind"] == "STRUCT" and t.get("name") == name]
        found.sort(key=lambda t: t.get("vlen") == 0)
        return _get_int(found[0], "id") if found else None

    def size(self, type_id: int) -> int:
        return self._builder.reader(type_id)[1]

    def resolve(self, type_id: int) -> Mapping[str, object]:
        """The type behind type_id, typedefs and qualifiers looked through."""
        return self._builder.resolve(type_id)

    def variable_type(self, name: str) -> int | None:
        """The type id of global variable `name` (a BTF VAR), or None."""
        for t in self.types.values():
            if t["kind"] == "VAR" and t.get("name") == name:
                return _get_int(t, "type_id")
        return None

    def read(self, type_id: int, data: bytes, offset: int = 0) -> object:
        """Decode the value of type_id at offset; BtfError when data is too short."""
        read, size = self._builder.reader(type_id)
        if len(data) < offset + size:
            raise BtfError(f"{len(data) - offset} bytes are fewer than the {size} of "
                           f"{_describe(self._builder.resolve(type_id))}")
        return read(data, offset)

    def decoder(self, type_id: int) -> EventDecoder:
        """A record decoder for the struct with this id."""
        t = self._builder.resolve(type_id)
        return EventDecoder(str(t.get("name") or "(anon)"), _get_int(t, "size"),
                            self._builder.struct_reader(t))
