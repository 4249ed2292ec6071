"""Hard edges of scenario input (issue 12): limits, ranges, sources, alternatives, names.

Each case is an input that once ended in a traceback, a hang, a wrong line or was
accepted; now it is a ScenarioError (exit 1) with ``file:line: path: message``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.errors import EXIT_USER
from lab.scenario.load import find_scenario, load_scenario, parse_scenario
from lab.scenario.model import ScenarioError
from lab.scenario.rules import source_problem
from lab.scenario.yamlmap import MAX_BYTES, parse_yaml
from tests.helpers import INVOKE, REPO

MINIMAL = """\
name: demo
description: A small scenario.
requires:
  kernel: "6.3"
  functions: [do_set_acl]
probes:
  - name: fentry
    source: bpf/acl/fentry.bpf.c
steps:
  - run: [id]
"""


def error_text(text: str, filename: str = "demo.yaml", root: Path | None = REPO) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, filename, root)
    assert info.value.code == EXIT_USER
    return str(info.value)


def _bomb(levels: int, width: int) -> str:
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels):
        refs = ", ".join(f"*a{level - 1}" for _ in range(width))
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- YAML limits


@pytest.mark.parametrize(("text", "message"), [
    ("a: " + "[" * 1000 + "]" * 1000 + "\n",
     "demo.yaml:1: refused YAML: nested deeper than 64 levels; "
     "a scenario needs fewer than 10"),
    ("a: " + "[{a: " * 200_000,  # just under 1 MiB, scanned ahead by PyYAML: refused early
     "demo.yaml:1: refused YAML: nested deeper than 64 levels; "
     "a scenario needs fewer than 10"),
    ("".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v\n",
     "demo.yaml:64: refused YAML: nested deeper than 64 levels; "
     "a scenario needs fewer than 10"),
    ("a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n",
     "demo.yaml:2: refused YAML: more than 100 aliases ('*name'); a scenario needs only a few"),
    (_bomb(9, 9),
     "demo.yaml:1: refused YAML: more than 100000 values once aliases are expanded "
     "(an alias bomb?); a scenario has a few hundred"),
])
def test_yaml_limits(text: str, message: str) -> None:
    assert error_text(text) == message


@pytest.mark.parametrize(("text", "message"), [
    (MINIMAL + "3: x\n", "demo.yaml:11: (top): unknown key 3: keys are names, not an integer"),
    (MINIMAL + "expect:\n  events:\n    - probe: fentry\n      match: {1: x}\n",
     "demo.yaml:14: expect.events[0].match: unknown key 1: keys are names, not an integer"),
    (MINIMAL.replace("name: demo", 'name: "demo\\n"'),
     "demo.yaml:1: name: expected a scenario name (lower-case letters, digits and '-', not "
     "starting with '-', at most 64 characters)"),
])
def test_keys_and_patterns(text: str, message: str) -> None:
    assert error_text(text) == message


def test_yaml_within_limits_still_parses() -> None:
    deep = "a: " + "[" * 60 + "]" * 60 + "\n"
    assert parse_yaml(deep, "t.yaml").data is not None
    assert parse_yaml("a: &a x\nb: [" + ", ".join(["*a"] * 100) + "]\n", "t.yaml").data


def test_file_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(MINIMAL + "#" * MAX_BYTES + "\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == (
        "demo.yaml: refused: the file is over 1048576 bytes (1 MiB); a scenario is a few "
        "kilobytes of YAML")


@pytest.mark.parametrize(("text", "line"), [
    ("name: demo\ndescription: x\x00y\n", 2),
    ("a: 1\rb: 2\rc: \x00\n", 3),            # old Mac line ends count as lines in YAML
    ("a: 1\r\nb: 2\r\nc: \x00\n", 3),
    ("a: 1\u2028b: 2\nc: d\x00\n", 3),       # so does U+2028
    ("# é\n" * 300 + "x: \x00\n", 301),
])
def test_nul_byte_line(text: str, line: int) -> None:
    assert error_text(text) == (
        f"demo.yaml:{line}: invalid YAML: unacceptable character #x0000: special characters "
        "are not allowed")


# --------------------------------------------------------------------------- numbers


TIMEOUT = "expected a timeout in seconds (an integer from 1 to 86400)"
EXIT = "expected an exit status (an integer from 0 to 255)"


@pytest.mark.parametrize(("step", "message"), [
    ("timeout: 1" + "0" * 400, f"steps[0].timeout: {TIMEOUT}, got a 401-character value"),
    ("timeout: 0", f"steps[0].timeout: {TIMEOUT}, got 0"),
    ("timeout: -5", f"steps[0].timeout: {TIMEOUT}, got -5"),
    ("timeout: 86401", f"steps[0].timeout: {TIMEOUT}, got 86401"),
    ("timeout: 1e400", f"steps[0].timeout: {TIMEOUT}"),
    ("timeout: 30.0", f"steps[0].timeout: {TIMEOUT}"),
    ("expect_exit: 256", f"steps[0].expect_exit: {EXIT}, got 256"),
    ("expect_exit: -1", f"steps[0].expect_exit: {EXIT}, got -1"),
])
def test_numbers_are_range_checked(step: str, message: str) -> None:
    assert error_text(MINIMAL + f"    {step}\n") == f"demo.yaml:11: {message}"


def test_number_limits_accepted() -> None:
    text = MINIMAL + "    timeout: 86400\n    expect_exit: 255\n"
    step = parse_scenario(text, "demo.yaml").steps[0]
    assert (step.timeout, step.expect_exit) == (86400, 255)


def test_event_counts_are_range_checked() -> None:
    text = MINIMAL + "expect:\n  events:\n    - probe: fentry\n      count: 10000000\n"
    assert error_text(text) == (
        "demo.yaml:14: expect.events[0].count: expected an event count (an integer from 0 "
        "to 1000000), got 10000000")


# --------------------------------------------------------------------------- probe sources


def test_missing_source() -> None:
    text = MINIMAL.replace("fentry.bpf.c", "nope.bpf.c")
    assert error_text(text) == (
        f"demo.yaml:8: probes[0].source: 'bpf/acl/nope.bpf.c' does not exist (probe sources "
        f"are files under bpf/ in {REPO})")


def test_source_outside_bpf() -> None:
    text = MINIMAL.replace("bpf/acl/fentry.bpf.c", "lab/guest/fentry_lab_guest.py\n"
                           "    loader: bcc")
    assert error_text(text) == (
        f"demo.yaml:8: probes[0].source: 'lab/guest/fentry_lab_guest.py' is outside bpf/ "
        f"(probe sources are files under bpf/ in {REPO})")


def test_source_symlink_leaving_the_project(tmp_path: Path) -> None:
    outside = tmp_path / "secret.bpf.c"
    outside.write_text("int x;\n", encoding="utf-8")
    root = tmp_path / "project"
    (root / "bpf" / "acl").mkdir(parents=True)
    (root / "bpf" / "acl" / "fentry.bpf.c").symlink_to(outside)
    assert error_text(MINIMAL, root=root) == (
        f"demo.yaml:8: probes[0].source: 'bpf/acl/fentry.bpf.c' is a symlink to {outside}, "
        f"outside bpf/: it would be uploaded into the guest (probe sources are files under "
        f"bpf/ in {root}, symlinks may not leave it)")
    # A symlink that stays inside bpf/ is fine.
    (root / "bpf" / "real.bpf.c").write_text("int x;\n", encoding="utf-8")
    (root / "bpf" / "acl" / "fentry.bpf.c").unlink()
    (root / "bpf" / "acl" / "fentry.bpf.c").symlink_to(root / "bpf" / "real.bpf.c")
    assert parse_scenario(MINIMAL, "demo.yaml", root).probes[0].source == "bpf/acl/fentry.bpf.c"


def test_source_problem_for_the_runner() -> None:
    assert source_problem("bpf/acl/fentry.bpf.c") is None
    assert source_problem("bpf/acl") is not None  # a folder is not a source


# --------------------------------------------------------------------------- alternatives


ALTERNATIVES = MINIMAL.replace("  functions: [do_set_acl]\n", """\
  functions: [do_set_acl]
  alternatives:
    - kernel: {below: "6.2"}
      functions: [ext4_set_acl]
    - kernel: RANGE
      functions: [ext4_set_acl]
""")


@pytest.mark.parametrize(("kernel", "covering"), [
    ('{min: "6.2"}', "kernel >= 6.2"),
    ('{min: "6.3"}', "kernel >= 6.3"),
])
def test_alternative_hiding_the_main_target(kernel: str, covering: str) -> None:
    assert error_text(ALTERNATIVES.replace("RANGE", kernel)) == (
        f"demo.yaml:9: requires.alternatives[1].kernel: with {covering} the alternatives "
        "cover every kernel from requires.kernel 6.3 up, so the main target (do_set_acl) "
        "can never run: give this range a 'below' (at most 6.3), or raise requires.kernel "
        "to the first kernel the main target is for")


def test_alternatives_that_leave_the_main_target_room() -> None:
    for kernel in ('{min: "6.4"}', '{min: "6.2", below: "6.3"}', '{min: "6.2", below: "6.4"}'):
        parse_scenario(ALTERNATIVES.replace("RANGE", kernel), "demo.yaml")


# --------------------------------------------------------------------------- names


def test_long_name_in_the_file() -> None:
    assert error_text(MINIMAL.replace("name: demo", "name: " + "a" * 300)) == (
        "demo.yaml:1: name: expected a scenario name (lower-case letters, digits and '-', "
        "not starting with '-', at most 64 characters)")


@pytest.mark.parametrize("name", ["a" * 300, "a" * 65, "A b", "-x", "x y.yaml", ""])
def test_find_refuses_names_that_are_not_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScenarioError) as info:
        find_scenario(name, tmp_path)
    assert str(info.value).startswith("bad scenario name ")
    assert "lower-case letters, digits and '-', not starting with '-', at most 64 characters" \
        in str(info.value)
    assert len(str(info.value)) < 300


def test_find_name_stays_in_the_scenarios_folder(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    outside = tmp_path / "other.yaml"
    outside.write_text(MINIMAL, encoding="utf-8")
    (scenarios / "evil.yaml").symlink_to(outside)
    with pytest.raises(ScenarioError, match=r"is a symlink to .*other\.yaml, outside "):
        find_scenario("evil", scenarios)
    # A file given by its path is used as given.
    assert find_scenario(str(outside), scenarios) == outside


def test_load_scenario_name_too_long(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read: File name too long"):
        load_scenario(tmp_path / ("a" * 300 + ".yaml"))


def test_validate_task_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(MINIMAL + "    expect_exit: 256\n", encoding="utf-8")
    done = subprocess.run([INVOKE, "scenario.validate", str(path)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert f"demo.yaml:11: steps[0].expect_exit: {EXIT}, got 256" in done.stderr
    assert "Traceback" not in done.stderr
