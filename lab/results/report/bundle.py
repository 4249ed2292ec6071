"""Read a results bundle for the report: every file optional, every parse forgiving."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILES = ("summary.json", "kernel.json", "live-text.json", "events.jsonl", "steps.jsonl",
         "trace_pipe.txt", "bpftrace-lv.txt", "loader.log", "build.log", "junit.xml")


@dataclass
class Bundle:
    path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    kernel: dict[str, Any] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    trace_pipe: list[str] = field(default_factory=list)
    bpftrace_lv: str = ""
    objdump: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        try:
            return sorted(p.name for p in self.path.iterdir() if p.is_file())
        except OSError:
            return []


def _text(bundle: Bundle, name: str) -> str | None:
    try:
        return (bundle.path / name).read_text(errors="replace")
    except FileNotFoundError:
        bundle.missing.append(name)
    except OSError:
        bundle.unreadable.append(name)
    return None


def _json(bundle: Bundle, name: str) -> Any:
    text = _text(bundle, name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        bundle.unreadable.append(name)
        return None


def _jsonl(bundle: Bundle, name: str) -> list[dict[str, Any]]:
    text = _text(bundle, name)
    rows = []
    for line in (text or "").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            if name not in bundle.unreadable:
                bundle.unreadable.append(name)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def load_bundle(path: Path) -> Bundle:
    bundle = Bundle(path)
    bundle.summary = _dict(_json(bundle, "summary.json"))
    bundle.kernel = _dict(_json(bundle, "kernel.json"))
    bundle.live = _dict(_json(bundle, "live-text.json"))
    bundle.events = _jsonl(bundle, "events.jsonl")
    bundle.steps = _jsonl(bundle, "steps.jsonl")
    bundle.trace_pipe = (_text(bundle, "trace_pipe.txt") or "").splitlines()
    bundle.bpftrace_lv = _text(bundle, "bpftrace-lv.txt") or ""
    for fn in [*bundle.live, "__fentry__"]:
        text = _text(bundle, f"objdump-{fn}.txt")
        if text is not None:
            bundle.objdump[fn] = text
    return bundle
