"""What a loader printed -> events, lost-record counts and decoded maps.

lab-loader prints one JSON line per ring-buffer or perf-buffer record (any map name)
and, when stopped, one line per map dump (see bpf/loader/lab-loader.c). This module
decides how each buffer's records are laid out and decodes them:

1. the probe's own `records: {MAP: STRUCT}` in the scenario;
2. `struct event` in the object's BTF (the lab's convention);
3. a struct that the probe's own sources declare, found in the object's DWARF, whose
   size is the record's (upstream tools rarely keep their record type in BTF);
4. otherwise the record is kept as hex, with a note that says why.

Nothing here raises on bad input: a malformed line or record is kept raw with a note,
so a run always writes its bundle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.run.dwarf import OwnStruct
from lab.run.events import BtfError, EventDecoder, TypeTable

# Per object: its BTF table (None when it has none) and a way to get its DWARF
# structs lazily (reading DWARF costs seconds, so only when BTF has no answer).
DwarfSource = Callable[[], tuple[list[OwnStruct], TypeTable]]


@dataclass
class ObjectTypes:
    probe_name: str
    btf: TypeTable | None
    dwarf: DwarfSource | None = None
    records: Mapping[str, str] = field(default_factory=dict)  # map -> struct name
    _dwarf: tuple[list[OwnStruct], TypeTable] | None = None

    def dwarf_structs(self) -> tuple[list[OwnStruct], TypeTable] | None:
        if self._dwarf is None and self.dwarf is not None:
            self._dwarf = self.dwarf()
        return self._dwarf


@dataclass
class Decoded:
    events: list[dict[str, object]] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)  # "object/map" -> records lost
    maps: dict[str, dict[str, object]] = field(default_factory=dict)  # probe -> maps
    notes: list[str] = field(default_factory=list)


class _Layouts:
    """Chooses and remembers one decoder per (object, map, record size)."""

    def __init__(self, objects: Mapping[str, ObjectTypes], notes: list[str]) -> None:
        self.objects = objects
        self.notes = notes
        self._chosen: dict[tuple[str, str, int], EventDecoder | None] = {}

    def decoder(self, obj: str, map_name: str, size: int) -> EventDecoder | None:
        key = (obj, map_name, size)
        if key not in self._chosen:
            self._chosen[key] = self._choose(obj, map_name, size)
        return self._chosen[key]

    def _choose(self, obj: str, map_name: str, size: int) -> EventDecoder | None:
        types = self.objects.get(obj)
        if types is None:
            self.notes.append(f"{obj}: records from an object the scenario does not name "
                              "are kept as hex")
            return None
        wanted = types.records.get(map_name)
        try:
            if wanted:
                return self._named(types, wanted, obj, map_name)
            if types.btf is not None:
                event = types.btf.struct_id("event")
                if event is not None:
                    return types.btf.decoder(event)
            return self._by_size(types, obj, map_name, size)
        except (BtfError, ValueError) as exc:
            self.notes.append(f"{obj} map {map_name}: records kept as hex ({exc})")
            return None

    def _named(self, types: ObjectTypes, name: str, obj: str,
               map_name: str) -> EventDecoder | None:
        if types.btf is not None and (found := types.btf.struct_id(name)) is not None:
            return types.btf.decoder(found)
        dwarf = types.dwarf_structs()
        if dwarf is not None:
            own, table = dwarf
            for struct in own:
                if struct.name == name:
                    return table.decoder(struct.type_id)
        self.notes.append(f"{obj} map {map_name}: `records` names struct {name}, which is "
                          "in neither the object's BTF nor its DWARF; records kept as hex")
        return None

    def _by_size(self, types: ObjectTypes, obj: str, map_name: str,
                 size: int) -> EventDecoder | None:
        dwarf = types.dwarf_structs()
        own, table = dwarf if dwarf is not None else ([], None)
        # Perf buffers pad records to 8 bytes: a struct up to 7 bytes shorter fits too.
        fits = [s for s in own if s.size == size] or \
            [s for s in own if 0 < size - s.size < 8]
        if len(fits) == 1 and table is not None:
            return table.decoder(fits[0].type_id)
        if fits:
            names = ", ".join(s.name for s in fits)
            self.notes.append(f"{obj} map {map_name}: {len(fits)} structs of {size} bytes "
                              f"({names}); say which with `records: {{{map_name}: NAME}}`; "
                              "records kept as hex")
        else:
            self.notes.append(f"{obj} map {map_name}: no struct of {size} bytes in the "
                              "object's BTF (struct event) or its sources' DWARF; records "
                              "kept as hex")
        return None


def decode_lines(lines: Iterable[str], objects: Mapping[str, ObjectTypes]) -> Decoded:
    """Turn a loader's stdout into events, lost counts and maps, never raising."""
    out = Decoded()
    layouts = _Layouts(objects, out.notes)
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a tool's own output line, not a record
        if not isinstance(record, dict):
            continue
        obj = str(record.get("object", ""))
        probe_name = objects[obj].probe_name if obj in objects else obj
        if "event" in record and isinstance(record["event"], dict):  # the BCC loader
            out.events.append({"probe_name": probe_name, **record["event"]})
            continue
        kind = record.get("kind", "ringbuf")
        map_name = str(record.get("map", "events"))
        if "lost" in record:
            key = f"{obj}/{map_name}"
            out.lost[key] = out.lost.get(key, 0) + int(record.get("lost") or 0)
        elif kind == "dump":
            types = objects.get(obj)
            out.maps.setdefault(probe_name, {})[map_name] = _decode_dump(
                record, types.btf if types else None, out.notes)
        elif "data" in record:
            out.events.append({"probe_name": probe_name,
                               **_decode_record(record, obj, map_name, layouts, out.notes)})
    return out


def _decode_record(record: Mapping[str, Any], obj: str, map_name: str, layouts: _Layouts,
                   notes: list[str]) -> dict[str, object]:
    try:
        data = bytes.fromhex(str(record["data"]))
    except ValueError as exc:
        notes.append(f"{obj} map {map_name}: a record that is not hex was dropped ({exc})")
        return {"map": map_name, "raw": str(record["data"])[:256], "note": "not hex"}
    decoder = layouts.decoder(obj, map_name, len(data))
    if decoder is None:
        return {"map": map_name, "raw": data.hex()}
    try:
        fields = decoder.decode(data)
    except BtfError as exc:
        return {"map": map_name, "raw": data.hex(), "note": str(exc)}
    return fields if map_name == "events" else {"map": map_name, **fields}


def _decode_dump(record: Mapping[str, Any], btf: TypeTable | None,
                 notes: list[str]) -> dict[str, object]:
    """One map dump -> {"type", "entries": [{"key", "value"}], "truncated"} or globals."""
    name = str(record.get("map"))
    value_size = int(record.get("value_size") or 0)
    cpus = int(record.get("cpus") or 1)
    entries = record.get("entries") or []
    result: dict[str, object] = {"type": record.get("type"),
                                 "truncated": bool(record.get("truncated"))}
    try:
        pairs = [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in entries]
    except (ValueError, TypeError):
        notes.append(f"map {name}: its dump is not hex pairs; left out")
        return result
    if "vars" in record:  # a global section: one entry, read variable by variable
        data = pairs[0][1] if pairs else b""
        result["globals"] = {str(v.get("name")): _read(btf, int(v.get("type_id") or 0),
                                                       data, int(v.get("offset") or 0),
                                                       int(v.get("size") or 0))
                             for v in record["vars"]}
        return result
    key_type = int(record.get("btf_key_type_id") or 0)
    value_type = int(record.get("btf_value_type_id") or 0)
    slot = (value_size + 7) // 8 * 8
    decoded = []
    for key, value in pairs:
        if cpus > 1:
            per_cpu = [_read(btf, value_type, value, i * slot, value_size) for i in range(cpus)]
            total = sum(v for v in per_cpu if isinstance(v, int)) \
                if all(isinstance(v, int) for v in per_cpu) else None
            decoded.append({"key": _read(btf, key_type, key, 0, len(key)),
                            "value": total if total is not None else per_cpu,
                            "per_cpu": per_cpu})
        else:
            decoded.append({"key": _read(btf, key_type, key, 0, len(key)),
                            "value": _read(btf, value_type, value, 0, value_size)})
    result["entries"] = decoded
    return result


def _read(btf: TypeTable | None, type_id: int, data: bytes, offset: int, size: int) -> object:
    """A typed value when the BTF knows type_id, else a little-endian int or hex."""
    if btf is not None and type_id:
        try:
            return btf.read(type_id, data, offset)
        except BtfError:
            pass
    raw = data[offset:offset + size]
    return int.from_bytes(raw, "little") if size in (1, 2, 4, 8) and len(raw) == size \
        else raw.hex()
