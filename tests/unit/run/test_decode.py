"""Loader output -> events, lost counts and maps, from records of real probes (tests/data/shapes:
recorded from bpf/shapes/*.bpf.c on a trixie lab, with their BTF and one object's DWARF)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from lab.run.decode import ObjectTypes, decode_lines
from lab.run.dwarf import OwnStruct, record_types
from lab.run.events import TypeTable
from tests.helpers import REPO

DATA = REPO / "tests" / "data" / "shapes"


def btf(name: str) -> TypeTable:
    return TypeTable((DATA / f"{name}.btf.json").read_text())


@functools.cache
def dwarf_of(path: Path) -> tuple[list[OwnStruct], TypeTable]:
    own, table = record_types(path)  # about 2 s: read once for the module
    return own, TypeTable(table)


def objects(**records: dict[str, str]) -> dict[str, ObjectTypes]:
    return {
        "counters.bpf.o": ObjectTypes("counters", btf("counters")),
        "perfbuf.bpf.o": ObjectTypes("perf", btf("perfbuf"), records=records.get("perf", {})),
        "ringbuf_dwarf.bpf.o": ObjectTypes("rbd", btf("ringbuf_dwarf"),
                                           lambda: dwarf_of(DATA / "ringbuf_dwarf.bpf.o")),
    }


def test_a_ring_buffer_not_named_events_is_decoded_from_the_dwarf() -> None:
    decoded = decode_lines((DATA / "buffers.loader.txt").read_text().splitlines(), objects())
    rbd = [e for e in decoded.events if e["probe_name"] == "rbd"]
    assert rbd == [
        {"probe_name": "rbd", "map": "rb", "pid": 254, "uid": 0, "comm": "setfacl",
         "file": {"name": "f2", "len": 3}},
        {"probe_name": "rbd", "map": "rb", "pid": 256, "uid": 1000, "comm": "setfacl",
         "file": {"name": "passwd", "len": 7}},
    ]


def test_perf_buffer_records_use_the_struct_named_in_records() -> None:
    decoded = decode_lines((DATA / "buffers.loader.txt").read_text().splitlines(),
                           objects(perf={"hits": "acl_hit"}))
    perf = [e for e in decoded.events if e["probe_name"] == "perf"]
    assert [(e["pid"], e["ret"], e["comm"]) for e in perf] == [
        (254, 0, "setfacl"), (256, -1, "setfacl")]
    assert decoded.notes == []


def test_a_record_no_struct_fits_is_kept_as_hex_with_a_note() -> None:
    decoded = decode_lines((DATA / "buffers.loader.txt").read_text().splitlines(), objects())
    perf = [e for e in decoded.events if e["probe_name"] == "perf"]
    assert perf[0]["raw"] == "fe000000000000007365746661636c00000000000000000000000000"
    assert decoded.notes == [
        "perfbuf.bpf.o map hits: no struct of 28 bytes in the object's BTF (struct event) "
        "or its sources' DWARF; records kept as hex"]


def test_maps_and_globals_are_decoded_with_their_btf_types() -> None:
    decoded = decode_lines((DATA / "counters.loader.txt").read_text().splitlines(), objects())
    maps: dict[str, Any] = decoded.maps["counters"]
    assert maps["calls_by_uid"]["entries"] == [{"key": 1000, "value": 1}]
    assert maps[".bss"]["globals"] == {"counts": [1, 1], "last_ret": -1}
    assert maps[".rodata"]["globals"] == {"targ_uid": 4294967295}


@pytest.mark.parametrize("line", [
    "not json", "[1, 2]", '{"object": "counters.bpf.o", "map": "rb", "data": "zz"}',
    '{"object": "counters.bpf.o", "map": "rb", "data": "0102"}',
    '{"object": "other.bpf.o", "map": "rb", "data": "0102"}',
    '{"object": "counters.bpf.o", "map": "m", "kind": "dump", "entries": [["zz", 1]]}',
    '{"object": "perfbuf.bpf.o", "map": "hits", "kind": "perf", "lost": 3, "cpu": 0}',
], ids=["text", "list", "bad-hex", "short", "unknown-object", "bad-dump", "lost"])
def test_malformed_or_odd_lines_never_raise(line: str) -> None:
    decoded = decode_lines([line], objects())
    json.dumps([decoded.events, decoded.maps, decoded.lost, decoded.notes])


def test_lost_perf_records_are_counted() -> None:
    line = '{"object": "perfbuf.bpf.o", "map": "hits", "kind": "perf", "lost": 3, "cpu": 0}'
    assert decode_lines([line, line], objects()).lost == {"perfbuf.bpf.o/hits": 6}
