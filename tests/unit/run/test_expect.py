"""Unit tests for lab.run.expect: step results, event matching and trace lines."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pytest

from lab.results.check import Check
from lab.run.expect import check_events, check_step, check_trace, event_matches
from lab.scenario.model import EventExpectation, Scalar, Step


def step(expect_exit: int = 0, expect_stdout: str | None = None,
         expect_stderr: str | None = None, timeout: int = 30) -> Step:
    return Step(name="root sets an ACL", argv=("setfacl", "-m", "u:test:rwx", "/tmp/file1"),
                shell=None, user="root", expect_exit=expect_exit, expect_stdout=expect_stdout,
                expect_stderr=expect_stderr, timeout=timeout)


def expectation(probe: str, match: Mapping[str, Scalar], count: int | None = None,
                min_: int = 1) -> EventExpectation:
    return EventExpectation(probe=probe, match=MappingProxyType(dict(match)), count=count,
                            min=count if count is not None else min_)


# --------------------------------------------------------------------------- Check


def test_check_describe_and_as_dict() -> None:
    ok = Check("step", "x", "exit 0", "exit 0", True)
    bad = Check("step", "x", "exit 0", "exit 1", False)
    assert ok.describe() == "[ok] x: expected exit 0; saw exit 0"
    assert bad.describe() == "[FAILED] x: expected exit 0; saw exit 1"
    assert bad.as_dict() == {"kind": "step", "name": "x", "expected": "exit 0",
                             "seen": "exit 1", "ok": False}


# --------------------------------------------------------------------------- steps


def test_step_exit_ok() -> None:
    checks = check_step(step(), 0, "", "", timed_out=False)
    assert len(checks) == 1
    (check,) = checks
    assert check.ok
    assert check.kind == "step"
    assert check.name == "step 'root sets an ACL' exit status"
    assert (check.expected, check.seen) == ("exit 0", "exit 0")


def test_step_exit_mismatch() -> None:
    (check,) = check_step(step(expect_exit=1), 0, "", "", timed_out=False)
    assert not check.ok
    assert (check.expected, check.seen) == ("exit 1", "exit 0")


def test_step_as_a_missing_user_shows_runusers_error() -> None:
    (check,) = check_step(step(), 1, "", "runuser: user nobody2 does not exist\n",
                          timed_out=False)
    assert not check.ok
    assert check.seen == "exit 1 (runuser: user nobody2 does not exist)"


def test_step_timed_out() -> None:
    checks = check_step(step(expect_stdout="x", timeout=7), 0, "x", "", timed_out=True)
    assert len(checks) == 1  # output checks make no sense after a timeout
    (check,) = checks
    assert not check.ok
    assert check.seen == "timed out after 7 s"


def test_step_stdout_and_stderr_substrings() -> None:
    s = step(expect_exit=1, expect_stdout="user:test:rwx", expect_stderr="not permitted")
    checks = check_step(s, 1, "# file: tmp/file1\nuser:test:rwx\n",
                        "setfacl: /etc/passwd: Operation not permitted\n", timed_out=False)
    assert [c.name for c in checks] == [
        "step 'root sets an ACL' exit status",
        "step 'root sets an ACL' stdout",
        "step 'root sets an ACL' stderr",
    ]
    assert all(c.ok for c in checks)
    assert checks[1].expected == "'user:test:rwx' in stdout"


def test_step_output_mismatch_shows_an_excerpt() -> None:
    s = step(expect_stdout="user:test:rwx", expect_stderr="denied")
    checks = check_step(s, 0, "user:test:r--\n", "", timed_out=False)
    stdout, stderr = checks[1], checks[2]
    assert not stdout.ok
    assert stdout.seen == "'user:test:r--'"
    assert not stderr.ok
    assert stderr.seen == "(empty)"


def test_step_output_excerpt_is_bounded() -> None:
    checks = check_step(step(expect_stdout="needle"), 0, "x" * 10_000, "", timed_out=False)
    assert not checks[1].ok
    assert len(checks[1].seen) < 400
    assert checks[1].seen.endswith("...'")


def test_step_without_output_expectations_checks_only_exit() -> None:
    assert len(check_step(step(), 0, "anything", "anything", timed_out=False)) == 1


# --------------------------------------------------------------------------- events

EVENT: dict[str, object] = {"probe_name": "fexit", "function": "do_set_acl",
                            "dentry": "passwd", "retval": -1, "ok": True}


def test_event_must_come_from_the_probe() -> None:
    assert event_matches(EVENT, "fexit", {})
    assert not event_matches(EVENT, "fentry", {})
    assert not event_matches({"function": "do_set_acl"}, "fexit", {})


def test_event_field_values() -> None:
    assert event_matches(EVENT, "fexit", {"function": "do_set_acl", "dentry": "passwd"})
    assert not event_matches(EVENT, "fexit", {"dentry": "file1"})
    assert not event_matches(EVENT, "fexit", {"missing": "x"})


@pytest.mark.parametrize(("have", "want", "matches"), [
    (-1, -1, True),
    (-1, "-1", True),  # YAML may quote what JSON gives as a number, and the reverse
    ("-1", -1, True),
    (0, "0", True),
    (-1, 1, False),
    (-1, "-01", False),
    (1, True, False),  # bools never equal numbers
    (True, 1, False),
    (0, False, False),
    (True, True, True),
    (False, False, True),
    (True, False, False),
    ("true", True, False),
    (True, "True", False),
])
def test_int_str_and_bool_values(have: object, want: Scalar, matches: bool) -> None:
    event = {"probe_name": "p", "field": have}
    assert event_matches(event, "p", {"field": want}) is matches


def test_count_is_exact() -> None:
    events = [EVENT, EVENT]
    (check,) = check_events([expectation("fexit", {"retval": -1}, count=1)], events)
    assert not check.ok
    assert check.kind == "event"
    assert check.expected == "exactly 1"
    assert check.seen.startswith("2 matching of 2 events")
    (check,) = check_events([expectation("fexit", {"retval": -1}, count=2)], events)
    assert check.ok


def test_count_zero_means_none() -> None:
    (check,) = check_events([expectation("fentry", {}, count=0)], [EVENT])
    assert check.ok
    (check,) = check_events([expectation("fexit", {}, count=0)], [EVENT])
    assert not check.ok


def test_min_is_a_lower_bound() -> None:
    events = [EVENT, EVENT, EVENT]
    (check,) = check_events([expectation("fexit", {"dentry": "passwd"}, min_=2)], events)
    assert check.ok
    assert check.expected == "at least 2"
    assert check.seen == "3 matching of 3 events"
    (check,) = check_events([expectation("fexit", {"dentry": "passwd"}, min_=4)], events)
    assert not check.ok


def test_check_name_lists_the_match() -> None:
    (check,) = check_events(
        [expectation("fexit", {"function": "do_set_acl", "retval": -1}, count=1)], [EVENT])
    assert check.name == "fexit event function=do_set_acl retval=-1"
    (check,) = check_events([expectation("fexit", {}, count=1)], [EVENT])
    assert check.name == "fexit event"


def test_failure_lists_the_events_seen_for_that_probe() -> None:
    events: list[dict[str, object]] = [
        {"probe_name": "fexit", "dentry": "file1", "retval": 0},
        {"probe_name": "fexit", "dentry": "passwd", "retval": -13},
        {"probe_name": "fentry", "dentry": "other"},
    ]
    (check,) = check_events([expectation("fexit", {"dentry": "passwd", "retval": -1},
                                         count=1)], events)
    assert not check.ok
    assert check.seen == ("0 matching of 3 events; events of this probe: "
                          "dentry=file1 retval=0; dentry=passwd retval=-13")
    assert "other" not in check.seen


def test_failure_lists_at_most_five_events() -> None:
    events = [{"probe_name": "p", "n": i} for i in range(8)]
    (check,) = check_events([expectation("p", {"n": 99}, count=1)], events)
    assert "n=4" in check.seen
    assert "n=5" not in check.seen


def test_failure_without_events_of_that_probe() -> None:
    (check,) = check_events([expectation("fentry", {"dentry": "x"})], [EVENT])
    assert check.seen == "0 matching of 1 events"


def test_one_check_per_expectation_in_order() -> None:
    exps = [expectation("fexit", {"retval": -1}, count=1),
            expectation("fentry", {}, count=0),
            expectation("fexit", {"retval": "-1"})]
    checks = check_events(exps, [EVENT])
    assert [c.ok for c in checks] == [True, True, True]
    assert check_events([], [EVENT]) == []


# --------------------------------------------------------------------------- trace


def test_check_trace() -> None:
    lines = [
        "  setfacl-312 [001] ...11  42.1: bpf_trace_printk: do_set_acl: dentry=file1, "
        "acl_name=system.posix_acl_access\n",
        "  setfacl-312 [001] ...11  42.2: bpf_trace_printk: do_set_acl: dentry=file1, "
        "acl_name=system.posix_acl_access, retval=0\n",
    ]
    checks = check_trace(["dentry=file1, acl_name=system.posix_acl_access, retval=0",
                          "dentry=passwd"], lines)
    assert [c.kind for c in checks] == ["trace", "trace"]
    hit, miss = checks
    assert hit.ok
    assert hit.seen == lines[1].strip()
    assert hit.name == "trace line 'dentry=file1, acl_name=system.posix_acl_access, retval=0'"
    assert not miss.ok
    assert miss.seen == "none in 2 lines"


def test_check_trace_first_hit_is_shown() -> None:
    (check,) = check_trace(["dentry=file1"], ["a dentry=file1 one", "b dentry=file1 two"])
    assert check.seen == "a dentry=file1 one"


def test_check_trace_without_lines() -> None:
    (check,) = check_trace(["x"], [])
    assert not check.ok
    assert check.seen == "none in 0 lines"
    assert check_trace([], ["x"]) == []


def test_missing_field_does_not_match_the_string_none() -> None:
    assert not event_matches({"probe_name": "p"}, "p", {"dentry": "None"})
