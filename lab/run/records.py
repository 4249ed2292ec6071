"""The loaders' output -> events: JSON lines from lab-loader (hex records) or BCC scripts.

A record that does not decode (bad hex, too short, a line that is not JSON) never stops a
run: it is kept raw, with a note saying why, for events-undecoded.jsonl.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import paramiko

from lab import console
from lab.run.events import BtfError, EventDecoder
from lab.run.probes import RunningLoader, fetch_btf, object_stem
from lab.ssh import Session


def load_decoders(ssh: Session, loaders: Sequence[RunningLoader], build_dir: str,
                  cache: Path) -> tuple[dict[str, EventDecoder], dict[str, str]]:
    """A decoder per libbpf object (from its BTF), and object name -> probe name."""
    decoders: dict[str, EventDecoder] = {}
    names: dict[str, str] = {}
    for loader in loaders:
        for probe in loader.probes:
            if probe.loader != "libbpf":
                names[Path(probe.source).name] = probe.name
                continue
            stem = object_stem(probe)
            obj = f"{stem.rsplit('/', 1)[-1]}.bpf.o"
            names[obj] = probe.name
            try:
                doc = fetch_btf(ssh, f"{build_dir}/{stem}.btf.json",
                                cache / f"{stem.replace('/', '_')}.btf.json")
                decoders[obj] = EventDecoder.from_btf_json(doc)
            except (BtfError, OSError, paramiko.SSHException, ValueError) as exc:
                console.warn(f"probe {probe.name}: no structured events ({exc})")
    return decoders, names


def decode_records(lines: Sequence[str], decoders: Mapping[str, EventDecoder],
                   names: Mapping[str, str]) -> tuple[list[dict[str, object]],
                                                      list[dict[str, object]]]:
    """(events, undecoded): each undecoded record is kept raw with a `note`."""
    events: list[dict[str, object]] = []
    bad: list[dict[str, object]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append({"raw": line[:4096], "note": f"not JSON: {exc}"})
            continue
        if not isinstance(record, dict):
            bad.append({"raw": line[:4096], "note": "not a JSON object"})
            continue
        obj = str(record.get("object", ""))
        try:
            if isinstance(record.get("event"), dict):
                fields = dict(record["event"])
            elif obj in decoders:
                fields = decoders[obj].decode_hex(str(record.get("data", "")))
            else:
                bad.append({"raw": record, "note": f"no decoder for object {obj!r}"})
                continue
        except BtfError as exc:
            bad.append({"raw": record, "note": str(exc)})
            continue
        events.append({"probe_name": names.get(obj, obj), **fields})
    return events, bad


def decode_loader_output(loaders: Sequence[RunningLoader], decoders: Mapping[str, EventDecoder],
                         names: Mapping[str, str]) -> tuple[list[dict[str, object]],
                                                            list[dict[str, object]]]:
    lines: list[str] = []
    for loader in loaders:
        lines += loader.stdout.decode("utf-8", "replace").splitlines()
    return decode_records(lines, decoders, names)
