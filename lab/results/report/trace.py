"""trace.json: the run's steps and calls in Chrome's trace-event format (Perfetto, chrome://tracing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab.results.report.calls import Call


def trace_events(steps: Sequence[Mapping[str, Any]], calls: Sequence[Call],
                 phases: Mapping[str, float]) -> dict[str, Any]:
    """Phases and steps on the host's clock (process 1), calls on the guest's (process 2):
    the two clocks are unrelated, so each gets its own track, starting at 0."""
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "host: phases and steps"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "guest: probed calls"}},
    ]
    ts = 0.0
    for name, seconds in phases.items():
        events.append({"ph": "X", "pid": 1, "tid": 1, "name": name, "cat": "phase",
                       "ts": round(ts * 1e6, 1), "dur": round(float(seconds) * 1e6, 1)})
        ts += float(seconds)
    step_start = sum(float(s) for n, s in _before(phases, "steps"))
    for step in steps:
        seconds = float(step.get("duration_s") or 0.0)
        if step.get("kind") == "setup":
            continue
        events.append({"ph": "X", "pid": 1, "tid": 2, "name": str(step.get("name", "step")),
                       "cat": "step", "ts": round(step_start * 1e6, 1),
                       "dur": round(seconds * 1e6, 1),
                       "args": {"argv": step.get("argv"), "user": step.get("user"),
                                "exit_status": step.get("exit_status")}})
        step_start += seconds
    starts = [t for c in calls for t in (c.start_ns, c.end_ns) if t is not None]
    origin = min(starts) if starts else 0
    for call in calls:
        begin = call.start_ns if call.start_ns is not None else call.end_ns
        if begin is None:
            continue
        if call.record:  # a record, not a call: an instant on its task's track
            events.append({"ph": "i", "s": "t", "pid": 2, "tid": call.pid or 0,
                           "name": call.function, "cat": "record",
                           "ts": round((begin - origin) / 1e3, 3),
                           "args": {"comm": call.comm, "uid": call.uid,
                                    **{k: str(v) for k, v in call.args.items()}}})
            continue
        end = call.end_ns if call.end_ns is not None else begin
        events.append({"ph": "X", "pid": 2, "tid": call.pid or 0,
                       "name": f"{call.function}", "cat": "call",
                       "ts": round((begin - origin) / 1e3, 3), "dur": round((end - begin) / 1e3, 3),
                       "args": {"comm": call.comm, "uid": call.uid, "result": call.result,
                                **{k: str(v) for k, v in call.args.items()}}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _before(phases: Mapping[str, float], name: str) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for key, value in phases.items():
        if key == name:
            return out
        out.append((key, value))
    return []
