"""Tests for lab.run.events.

tests/data/fentry.btf.json is real bpftool output, made on a Debian 12 host with
``make -C bpf O=DIR DIR/acl/fentry.btf.json`` (clang 14, bpftool 7.1), i.e.
``bpftool -j btf dump file fentry.bpf.o``.
"""

from __future__ import annotations

import json
import struct

import pytest

from lab.run.events import BtfError, EventDecoder
from tests.helpers import REPO

BTF_JSON = REPO / "tests" / "data" / "fentry.btf.json"

# struct event from bpf/acl/acl_event.h, packed by hand: 4 bytes of padding
# after acl_name keep ts_ns 8-byte aligned (offset 200), 208 bytes in all.
EVENT_FORMAT = struct.Struct("<8s32s16sIIi64s64s4xQ")


def pack_event(
    probe: bytes,
    retval: int,
    *,
    dentry: bytes = b"file1",
    acl_name: bytes = b"system.posix_acl_access",
) -> bytes:
    return EVENT_FORMAT.pack(
        probe,
        b"do_set_acl",
        b"setfacl",
        3776,
        1000,
        retval,
        dentry,
        acl_name,
        123_456_789_012,
    )


@pytest.fixture(scope="module")
def btf_doc() -> object:
    doc: object = json.loads(BTF_JSON.read_text())
    return doc


@pytest.fixture(scope="module")
def decoder(btf_doc: object) -> EventDecoder:
    return EventDecoder.from_btf_json(btf_doc)


def test_layout_matches_c_struct(decoder: EventDecoder) -> None:
    assert EVENT_FORMAT.size == 208
    assert decoder.size == 208
    assert decoder.struct_name == "event"


def test_fexit_record(decoder: EventDecoder) -> None:
    assert decoder.decode(pack_event(b"fexit", -1)) == {
        "probe": "fexit",
        "function": "do_set_acl",
        "comm": "setfacl",
        "pid": 3776,
        "uid": 1000,
        "retval": -1,
        "dentry": "file1",
        "acl_name": "system.posix_acl_access",
        "ts_ns": 123_456_789_012,
    }


def test_fentry_record_drops_retval(decoder: EventDecoder) -> None:
    fields = decoder.decode(pack_event(b"fentry", 0))
    assert "retval" not in fields
    assert fields["probe"] == "fentry"
    assert fields["dentry"] == "file1"
    assert list(fields) == [
        "probe",
        "function",
        "comm",
        "pid",
        "uid",
        "dentry",
        "acl_name",
        "ts_ns",
    ]


def test_strings_stop_at_nul_and_replace_bad_utf8(decoder: EventDecoder) -> None:
    record = pack_event(b"fexit", 0, dentry=b"caf\xc3\xa9\xff\x00stale", acl_name=b"x" * 64)
    fields = decoder.decode(record)
    assert fields["dentry"] == "café\ufffd"
    assert fields["acl_name"] == "x" * 64  # a full array has no NUL at all


def test_unsigned_fields_and_trailing_bytes(decoder: EventDecoder) -> None:
    record = EVENT_FORMAT.pack(
        b"fexit", b"f", b"c", 0xFFFFFFFF, 0x80000000, -(2**31), b"", b"", 2**64 - 1
    )
    fields = decoder.decode(record + b"\xaa" * 8)  # ring buffer padding is ignored
    assert fields["pid"] == 0xFFFFFFFF
    assert fields["uid"] == 0x80000000
    assert fields["retval"] == -(2**31)
    assert fields["ts_ns"] == 2**64 - 1
    assert fields["dentry"] == ""


def test_decode_hex_matches_lab_loader_output(decoder: EventDecoder) -> None:
    record = pack_event(b"fexit", 0)
    line = json.loads(json.dumps({"object": "fexit.bpf.o", "data": record.hex()}))
    assert decoder.decode_hex(line["data"]) == decoder.decode(record)
    with pytest.raises(BtfError, match="hex"):
        decoder.decode_hex("zz")


def test_short_record_raises(decoder: EventDecoder) -> None:
    record = pack_event(b"fexit", 0)
    with pytest.raises(BtfError, match="shorter"):
        decoder.decode(record[:-1])
    with pytest.raises(BtfError):
        decoder.decode(b"")


def test_json_text_is_accepted() -> None:
    decoder = EventDecoder.from_btf_json(BTF_JSON.read_text())
    assert decoder.decode(pack_event(b"fexit", 7))["retval"] == 7


def test_missing_struct_raises(btf_doc: object) -> None:
    with pytest.raises(BtfError, match="no struct 'nope'"):
        EventDecoder.from_btf_json(btf_doc, "nope")


@pytest.mark.parametrize(
    "doc",
    [
        {"maps": []},
        [],
        "not json at all",
        {"types": {"id": 1}},
        {"types": [{"name": "event"}]},
        None,
    ],
)
def test_not_bpftool_json_raises(doc: object) -> None:
    with pytest.raises(BtfError):
        EventDecoder.from_btf_json(doc)
    assert issubclass(BtfError, ValueError)


# A small hand-written BTF document (in bpftool's JSON shape) for the kinds the
# acl probes do not use.
SYNTHETIC_BTF = {
    "types": [
        {"id": 1, "kind": "INT", "name": "int", "size": 4, "bits_offset": 0,
         "nr_bits": 32, "encoding": "SIGNED"},
        {"id": 2, "kind": "INT", "name": "_Bool", "size": 1, "bits_offset": 0,
         "nr_bits": 8, "encoding": "BOOL"},
        {"id": 3, "kind": "INT", "name": "unsigned short", "size": 2, "bits_offset": 0,
         "nr_bits": 16, "encoding": "(none)"},
        {"id": 4, "kind": "ENUM", "name": "state", "size": 4, "vlen": 2,
         "values": [{"name": "ST_IDLE", "val": 0}, {"name": "ST_BUSY", "val": 1}]},
        {"id": 5, "kind": "ARRAY", "name": "(anon)", "type_id": 3, "index_type_id": 1,
         "nr_elems": 3},
        {"id": 6, "kind": "PTR", "name": "(anon)", "type_id": 0},
        {"id": 7, "kind": "STRUCT", "name": "inner", "size": 4, "vlen": 2,
         "members": [{"name": "a", "type_id": 3, "bits_offset": 0},
                     {"name": "b", "type_id": 3, "bits_offset": 16}]},
        {"id": 8, "kind": "UNION", "name": "(anon)", "size": 4, "vlen": 2,
         "members": [{"name": "word", "type_id": 1, "bits_offset": 0},
                     {"name": "half", "type_id": 3, "bits_offset": 0}]},
        {"id": 9, "kind": "TYPEDEF", "name": "state_t", "type_id": 10},
        {"id": 10, "kind": "CONST", "name": "(anon)", "type_id": 4},
        {"id": 11, "kind": "STRUCT", "name": "sample", "size": 40, "vlen": 9,
         "members": [
             {"name": "state", "type_id": 9, "bits_offset": 0},
             {"name": "other", "type_id": 4, "bits_offset": 32},
             {"name": "ok", "type_id": 2, "bits_offset": 64},
             {"name": "lo", "type_id": 1, "bits_offset": 72, "bitfield_size": 3},
             {"name": "hi", "type_id": 3, "bits_offset": 75, "bitfield_size": 5},
             {"name": "vals", "type_id": 5, "bits_offset": 80},
             {"name": "ptr", "type_id": 6, "bits_offset": 128},
             {"name": "in", "type_id": 7, "bits_offset": 192},
             {"name": "(anon)", "type_id": 8, "bits_offset": 224},
         ]},
    ]
}  # fmt: skip


def test_other_btf_kinds() -> None:
    decoder = EventDecoder.from_btf_json(SYNTHETIC_BTF, "sample")
    bits = 0b101 | (0b10011 << 3)  # lo = -3 (3-bit signed), hi = 19
    record = struct.pack(
        "<iiBB3HQHHi8x", 1, 7, 1, bits, 10, 20, 30, 0xFFFF_8000_0000_1000, 5, 6, -2
    )
    assert len(record) == decoder.size == 40
    assert decoder.decode(record) == {
        "state": "ST_BUSY",
        "other": 7,  # no enumerator: the plain value
        "ok": True,
        "lo": -3,
        "hi": 19,
        "vals": [10, 20, 30],
        "ptr": 0xFFFF_8000_0000_1000,
        "in": {"a": 5, "b": 6},
        "word": -2,  # anonymous union members land in the parent dict
        "half": 0xFFFE,
    }
