"""Checks on maps, globals, tool output, nested fields and the lab's own processes."""

from __future__ import annotations

from lab.run.expect_more import (
    check_maps,
    check_output,
    field_value,
    without_lab_processes,
)
from lab.scenario.model import MapExpectation, OutputExpectation

MAPS: dict[str, dict[str, object]] = {"counters": {
    "calls_by_uid": {"type": "hash", "entries": [{"key": 1000, "value": 1}]},
    ".bss": {"globals": {"counts": [1, 1], "last_ret": -1}},
    ".rodata": {"globals": {"targ_uid": 1000}},
}}


def exp(**kw: object) -> MapExpectation:
    base: dict[str, object] = {"probe": "counters", "glob": None, "map": None, "key": None,
                               "equals": None, "min": None, "max": None}
    return MapExpectation(**{**base, **kw})  # type: ignore[arg-type]


def test_globals_and_map_entries() -> None:
    checks = check_maps([exp(glob="counts", equals=(1, 1)), exp(glob="last_ret", equals=-1),
                         exp(glob="targ_uid", min=1000, max=1000),
                         exp(map="calls_by_uid", key=1000, equals=1)], MAPS)
    assert [c.ok for c in checks] == [True, True, True, True]
    assert checks[0].describe() == "[ok] counters global counts: expected = [1, 1]; saw [1, 1]"


def test_missing_names_say_what_there_is() -> None:
    checks = check_maps([exp(glob="nope", equals=1), exp(map="calls_by_uid", key=0, equals=1),
                         exp(map="other", equals=1)], MAPS)
    assert [c.ok for c in checks] == [False, False, False]
    assert checks[0].seen == "no global nope (globals: counts, last_ret, targ_uid)"
    assert checks[1].seen == "no entry with key 0 in map calls_by_uid"
    assert checks[2].seen == "no map other (maps: .bss, .rodata, calls_by_uid)"


def test_output_lines() -> None:
    lines = {"script": ["Attaching 1 probe...", "do_set_acl passwd ret=-1", "@calls[1000]: 1"]}
    checks = check_output([
        OutputExpectation("script", "passwd", None, None, 1),
        OutputExpectation("script", None, r"^@calls\[1000\]: 1$", 1, 1),
        OutputExpectation("script", "nothing", None, None, 1),
        OutputExpectation("other", "x", None, 0, 0)], lines)
    assert [c.ok for c in checks] == [True, True, False, True]
    assert "last lines: Attaching 1 probe..." in checks[2].seen


def test_nested_fields_and_lab_processes() -> None:
    event: dict[str, object] = {"comm": "setfacl", "file": {"name": "passwd", "len": 7}}
    assert field_value(event, "file.name") == (True, "passwd")
    assert field_value(event, "file.nope") == (False, None)
    assert field_value(event, "comm.x") == (False, None)
    events: list[dict[str, object]] = [event, {"comm": "sshd-session"}, {"comm": "bpftool"}]
    assert without_lab_processes(events) == [event]
