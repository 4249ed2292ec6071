"""Checking what a scenario expects against what the run saw (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lab.results.check import Check
from lab.run.expect_more import field_value
from lab.scenario.model import EventExpectation, Step


def check_step(step: Step, exit_status: int, stdout: str, stderr: str,
               timed_out: bool) -> list[Check]:
    label = f"step '{step.name}'"
    if timed_out:
        return [Check("step", f"{label} exit status", f"exit {step.expect_exit}",
                      f"timed out after {step.timeout:g} s", False)]
    seen = f"exit {exit_status}"
    runuser = [line for line in stderr.splitlines() if line.startswith("runuser:")]
    if exit_status != step.expect_exit and runuser:  # e.g. "runuser: user bob does not exist"
        seen += f" ({runuser[0].strip()})"
    checks = [Check("step", f"{label} exit status", f"exit {step.expect_exit}", seen,
                    exit_status == step.expect_exit)]
    for stream, wanted, text in (("stdout", step.expect_stdout, stdout),
                                 ("stderr", step.expect_stderr, stderr)):
        if wanted is not None:
            checks.append(Check("step", f"{label} {stream}", f"{wanted!r} in {stream}",
                                _excerpt(text), wanted in text))
    return checks


def event_matches(event: Mapping[str, object], probe: str,
                  match: Mapping[str, object]) -> bool:
    if event.get("probe_name") != probe:
        return False
    for key, want in match.items():
        found, have = field_value(event, key)  # "file.name" reaches a nested field
        if not found:
            return False
        if isinstance(want, bool) or isinstance(have, bool):
            if have is not want:
                return False
        elif have != want and str(have) != str(want):
            return False
    return True


def check_events(expectations: Sequence[EventExpectation],
                 events: Sequence[Mapping[str, object]]) -> list[Check]:
    checks = []
    for exp in expectations:
        n = sum(1 for e in events if event_matches(e, exp.probe, exp.match))
        fields = " ".join(f"{k}={v}" for k, v in exp.match.items())
        name = f"{exp.probe} event {fields}".strip()
        if exp.count is not None:
            expected, ok = f"exactly {exp.count}", n == exp.count
        else:
            expected, ok = f"at least {exp.min}", n >= exp.min
        seen = f"{n} matching of {len(events)} events"
        if not ok:
            same_probe = [e for e in events if e.get("probe_name") == exp.probe][:5]
            if same_probe:
                seen += "; events of this probe: " + "; ".join(
                    " ".join(f"{k}={e.get(k)}" for k in exp.match) for e in same_probe)
        checks.append(Check("event", name, expected, seen, ok))
    return checks


def check_trace(substrings: Sequence[str], lines: Sequence[str]) -> list[Check]:
    checks = []
    for wanted in substrings:
        hit = next((line for line in lines if wanted in line), None)
        checks.append(Check("trace", f"trace line {wanted!r}", "a matching trace_pipe line",
                            hit.strip() if hit else f"none in {len(lines)} lines", hit is not None))
    return checks


def _excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    if not text:
        return "(empty)"
    return repr(text if len(text) <= limit else text[:limit] + "...")
