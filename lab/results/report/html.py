"""report.html: one self-contained page (inline CSS and SVG) rendered with jinja2."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from lab.results.report.bundle import FILES, Bundle
from lab.results.report.calls import pair_calls
from lab.results.report.picture import entry_picture, parse_objdump

PHASE_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                 "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("lab.results.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)


def phase_bar(phases: dict[str, Any]) -> list[dict[str, Any]]:
    total = sum(float(v) for v in phases.values() if isinstance(v, int | float)) or 1.0
    x = 0.0
    bars = []
    for i, (name, value) in enumerate(phases.items()):
        if not isinstance(value, int | float):
            continue
        width = 100.0 * float(value) / total
        bars.append({"name": name, "seconds": float(value), "x": x, "width": width,
                     "colour": PHASE_COLOURS[i % len(PHASE_COLOURS)]})
        x += width
    return bars


def call_lanes(calls: list[Any]) -> dict[str, Any]:
    starts = [c.start_ns for c in calls if c.start_ns is not None]
    ends = [c.end_ns for c in calls if c.end_ns is not None]
    if not starts or not ends:
        return {"lanes": [], "span_ms": 0.0}
    origin, last = min(starts), max(ends)
    span = max(last - origin, 1)
    lanes = []
    for call in calls:
        if call.start_ns is None or call.end_ns is None:
            continue
        lanes.append({"x": 100.0 * (call.start_ns - origin) / span,
                      "width": max(100.0 * (call.end_ns - call.start_ns) / span, 0.4),
                      "call": call})
    return {"lanes": lanes, "span_ms": span / 1e6}


def context(bundle: Bundle) -> dict[str, Any]:
    summary = bundle.summary
    checks = [c for c in summary.get("expectations") or [] if isinstance(c, dict)]
    checks.sort(key=lambda c: bool(c.get("ok")))
    calls = pair_calls(bundle.events)
    pictures = [entry_picture(fn, live if isinstance(live, dict) else {},
                              bundle.objdump.get(fn), bundle.kernel)
                for fn, live in bundle.live.items()]
    phases = summary.get("phases_s") if isinstance(summary.get("phases_s"), dict) else {}
    serial = summary.get("serial_tail") or summary.get("serial") or ""
    satisfied = {str(c.get("seen")) for c in checks if c.get("kind") == "trace" and c.get("ok")}
    return {
        "s": {k: summary.get(k) for k in ("scenario", "status", "kernel", "release", "accel",
                                           "backend", "run_id", "duration_s", "started",
                                           "lab", "error")},
        "path": str(bundle.path),
        "checks": checks,
        "failed": sum(1 for c in checks if not c.get("ok")),
        "phases": phase_bar(phases or {}),
        "pictures": pictures,
        "calls": calls,
        "lanes": call_lanes(calls),
        "steps": bundle.steps,
        "trace_pipe": [{"line": line, "hit": line.strip() in satisfied}
                       for line in bundle.trace_pipe],
        "kernel": bundle.kernel,
        "bpftrace_lv": bundle.bpftrace_lv,
        "objdump": {fn: parse_objdump(text)[:12] for fn, text in bundle.objdump.items()},
        "missing": [f for f in bundle.missing if f in FILES or f.startswith("objdump-")],
        "unreadable": bundle.unreadable,
        "files": bundle.files,
        "serial_tail": str(serial),
        "accel": summary.get("accel"),
    }


def render_report(bundle: Bundle) -> str:
    return environment().get_template("report.html.j2").render(**context(bundle))
