"""Loader output -> events: a malformed record is kept raw with a note, never a traceback."""

from __future__ import annotations

import json

from lab.run.events import EventDecoder
from lab.run.records import decode_records
from tests.unit.run.test_events import BTF_JSON, pack_event

DECODERS = {"fentry.bpf.o": EventDecoder.from_btf_json(json.loads(BTF_JSON.read_text()))}
NAMES = {"fentry.bpf.o": "acl-fentry", "acl_bcc.py": "bcc"}


def line(obj: str, data: str) -> str:
    return json.dumps({"object": obj, "data": data})


def test_good_records_become_events() -> None:
    events, bad = decode_records(
        [line("fentry.bpf.o", pack_event(b"fentry", 0).hex()),
         json.dumps({"object": "acl_bcc.py", "event": {"comm": "setfacl"}})], DECODERS, NAMES)
    assert bad == []
    assert [e["probe_name"] for e in events] == ["acl-fentry", "bcc"]
    assert events[0]["comm"] == "setfacl" and events[1] == {"probe_name": "bcc",
                                                            "comm": "setfacl"}


def test_malformed_records_are_kept_raw_with_a_note() -> None:
    good = pack_event(b"fentry", 0).hex()
    events, bad = decode_records([
        line("fentry.bpf.o", "zz" + good[2:]),         # bad hex
        line("fentry.bpf.o", good[:20]),               # short record
        line("other.bpf.o", good),                     # no decoder for it
        "{not json",                                   # a torn line
        "[1, 2]",                                      # JSON, not an object
        "",
        line("fentry.bpf.o", good),
    ], DECODERS, NAMES)
    assert len(events) == 1
    notes = [str(b["note"]) for b in bad]
    assert notes[0].startswith("record is not valid hex")
    assert notes[1] == "record of 10 bytes is shorter than struct event (208 bytes)"
    assert notes[2] == "no decoder for object 'other.bpf.o'"
    assert notes[3].startswith("not JSON: ")
    assert notes[4] == "not a JSON object"
    assert bad[0]["raw"] == {"object": "fentry.bpf.o", "data": "zz" + good[2:]}
    assert bad[3]["raw"] == "{not json"
