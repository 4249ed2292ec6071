"""Checks for users' own programs (pure functions): values in maps and globals, lines a
tool printed, nested event fields, and leaving the lab's own processes out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from lab.results.check import Check
from lab.scenario.model import MapExpectation, OutputExpectation

# What the lab itself runs in the guest while probes are attached: its SSH sessions,
# bpftool (waiting for a tool's programs), the loader and the guest helper.
LAB_COMMS = frozenset({"sshd", "sshd-session", "sshd-auth", "bpftool", "lab-loader",
                       "fentry-lab-gues"})


def field_value(event: Mapping[str, object], dotted: str) -> tuple[bool, object]:
    """(found, value) of `file.name` in {"file": {"name": ...}}."""
    value: object = event
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def without_lab_processes(events: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    return [e for e in events if str(e.get("comm", "")) not in LAB_COMMS]


def _same(have: object, want: object) -> bool:
    if isinstance(want, (list, tuple)):
        return isinstance(have, (list, tuple)) and len(have) == len(want) and \
            all(_same(h, w) for h, w in zip(have, want, strict=True))
    if isinstance(want, bool) or isinstance(have, bool):
        return have is want
    return have == want or str(have) == str(want)


def _lookup(exp: MapExpectation, maps: Mapping[str, Mapping[str, object]]) -> tuple[bool, object]:
    probe_maps = maps.get(exp.probe, {})
    if exp.glob is not None:
        for section in (".rodata", ".data", ".bss"):
            found = probe_maps.get(section)
            globs = found.get("globals") if isinstance(found, Mapping) else None
            if isinstance(globs, Mapping) and exp.glob in globs:
                return True, globs[exp.glob]
        return False, f"no global {exp.glob} (globals: " + ", ".join(sorted(
            str(g) for s in probe_maps.values() if isinstance(s, Mapping)
            for g in (s.get("globals") or {}))) + ")"
    dump = probe_maps.get(str(exp.map))
    if not isinstance(dump, Mapping):
        return False, f"no map {exp.map} (maps: {', '.join(sorted(probe_maps)) or 'none'})"
    entries = dump.get("entries")
    key = 0 if exp.key is None else exp.key
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and _same(entry.get("key"), key):
            return True, entry.get("value")
    return False, f"no entry with key {key} in map {exp.map}"


def check_maps(expectations: Sequence[MapExpectation],
               maps: Mapping[str, Mapping[str, object]]) -> list[Check]:
    checks = []
    for exp in expectations:
        found, value = _lookup(exp, maps)
        if exp.equals is not None:
            expected = f"= {list(exp.equals) if isinstance(exp.equals, tuple) else exp.equals}"
            ok = found and _same(value, exp.equals)
        else:
            bounds = [f">= {exp.min}"] if exp.min is not None else []
            bounds += [f"<= {exp.max}"] if exp.max is not None else []
            expected = " and ".join(bounds)
            ok = found and isinstance(value, int) and not isinstance(value, bool) and \
                (exp.min is None or value >= exp.min) and (exp.max is None or value <= exp.max)
        checks.append(Check("map", exp.label, expected, str(value), ok))
    return checks


def check_output(expectations: Sequence[OutputExpectation],
                 outputs: Mapping[str, Sequence[str]]) -> list[Check]:
    checks = []
    for exp in expectations:
        lines = outputs.get(exp.probe, [])
        if exp.regex is not None:
            pattern = re.compile(exp.regex)
            hits = [line for line in lines if pattern.search(line)]
            what = f"/{exp.regex}/"
        else:
            hits = [line for line in lines if str(exp.contains) in line]
            what = repr(exp.contains)
        n = len(hits)
        if exp.count is not None:
            expected, ok = f"exactly {exp.count} line(s) with {what}", n == exp.count
        else:
            expected, ok = f"at least {exp.min} line(s) with {what}", n >= exp.min
        seen = f"{n} of {len(lines)} lines"
        if not ok and lines:
            seen += "; last lines: " + " | ".join(lines[-5:])
        checks.append(Check("output", f"{exp.probe} output", expected, seen, ok))
    return checks
