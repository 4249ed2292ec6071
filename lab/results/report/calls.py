"""Calls: each fentry event paired with its fexit (same task, same function).

An event that names no function (a user's ring-buffer record, a tracepoint's) is kept as a
record: it is shown with its fields, without a return value it never had."""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Fields of an event that are the probe's bookkeeping, not the function's arguments.
META = {"probe_name", "probe", "function", "comm", "pid", "tid", "uid", "ts_ns", "retval"}


@dataclass
class Call:
    function: str
    comm: str
    pid: int | None
    uid: int | None
    args: dict[str, Any] = field(default_factory=dict)
    start_ns: int | None = None
    end_ns: int | None = None
    retval: int | None = None
    record: bool = False

    @property
    def duration_ms(self) -> float | None:
        if self.start_ns is None or self.end_ns is None:
            return None
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def result(self) -> str:
        """`0`, `-1 EPERM`, `-13 EACCES` (a negative errno), or `?` while unmatched."""
        return retval_text(self.retval)

    def args_text(self) -> str:
        if self.record:
            return ", ".join(f"{k}={v}" for k, v in self.args.items())
        return ", ".join(str(v) for v in self.args.values())

    def line(self) -> str:
        """`setfacl[355] uid=1000 do_set_acl(passwd) = -1 EPERM 2.5 ms`"""
        duration = f" {self.duration_ms:.1f} ms" if self.duration_ms is not None else ""
        who = f"{self.comm}[{self.pid}]" + (f" uid={self.uid}" if self.uid is not None else "")
        if self.record:
            return f"{who} {self.function}: {self.args_text()}"
        return f"{who} {self.function}({self.args_text()}) = {self.result}{duration}"


def retval_text(retval: int | None) -> str:
    if retval is None:
        return "?"
    if retval < 0:
        name = errno.errorcode.get(-retval)
        # The probes report -1 for "some error": errno 1 is EPERM, the one setfacl gets.
        return f"{retval} {name}" if name else str(retval)
    return str(retval)


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def pair_calls(events: Iterable[Mapping[str, Any]]) -> list[Call]:
    """fentry opens a call of (function, tid or pid); the next fexit of that task closes it.
    An fexit without an fentry is a call whose start was not seen."""
    calls: list[Call] = []
    open_calls: dict[tuple[str, int | None], list[Call]] = {}
    for event in sorted(events, key=lambda e: _int(e.get("ts_ns")) or 0):
        fn = str(event.get("function", "?"))
        task = _int(event.get("tid", event.get("pid")))
        args = {k: v for k, v in event.items() if k not in META}
        kind = str(event.get("probe", event.get("probe_name", "")))
        if "function" not in event and not kind.startswith(("fentry", "fexit")):
            calls.append(Call(kind or "event", str(event.get("comm", "?")),
                              _int(event.get("pid")), _int(event.get("uid")), args,
                              start_ns=_int(event.get("ts_ns")), record=True))
        elif kind.startswith("fexit"):
            waiting = open_calls.get((fn, task))
            call = waiting.pop() if waiting else None
            if call is None:
                call = Call(fn, str(event.get("comm", "?")), _int(event.get("pid")),
                            _int(event.get("uid")), args)
                calls.append(call)
            call.end_ns = _int(event.get("ts_ns"))
            call.retval = _int(event.get("retval"))
            for key, value in args.items():
                call.args.setdefault(key, value)
        else:
            call = Call(fn, str(event.get("comm", "?")), _int(event.get("pid")),
                        _int(event.get("uid")), args, start_ns=_int(event.get("ts_ns")))
            calls.append(call)
            open_calls.setdefault((fn, task), []).append(call)
    return calls
