"""Unit tests for lab.scenario: YAML loading, schema validation, model, lookup."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.scenario.load import find_scenario, list_scenarios, load_scenario, parse_scenario
from lab.scenario.model import (
    DEFAULT_LOADER,
    DEFAULT_MIN,
    DEFAULT_TIMEOUT,
    DEFAULT_USER,
    ScenarioError,
    Step,
)
from lab.scenario.schema import SCHEMA_PATH
from lab.scenario.yamlmap import parse_yaml
from tests.helpers import REPO

SCENARIOS = REPO / "scenarios"

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
  - run: [setfacl, -m, "u:test:rwx", /tmp/file1]
  - shell: "setfacl -m u:test:rwx /etc/passwd"
    as: test
    expect_exit: 1
expect:
  events:
    - probe: fentry
      match: {function: do_set_acl, dentry: file1}
"""


def error_text(text: str, filename: str = "demo.yaml") -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, filename)
    return str(info.value)


# --------------------------------------------------------------------------- shipped files


def test_shipped_scenarios_validate() -> None:
    paths = list_scenarios(SCENARIOS)
    names = {path.stem for path in paths}
    assert {"acl-basic", "acl-default", "acl-remove"} <= names
    for path in paths:
        scenario = load_scenario(path)
        assert scenario.name == path.stem
        assert scenario.path == path
        for probe in scenario.probes:
            assert (REPO / probe.source).is_file(), f"{path.name}: missing {probe.source}"


def test_conversion_equals_safe_load_on_shipped_files() -> None:
    for path in list_scenarios(SCENARIOS):
        text = path.read_text(encoding="utf-8")
        assert parse_yaml(text, path.name).data == yaml.safe_load(text)


def test_conversion_equals_safe_load_on_tricky_yaml() -> None:
    text = """\
base: &base {a: 1, b: [x, y]}
merged:
  <<: *base
  b: override
multi:
  <<: [{p: 1}, {p: 2, q: 3}]
alias: *base
scalars: [~, null, true, no, 0x1f, 0o17, 1_000, 1.5e3, .inf, 2024-01-02, "007", '6.3', 6.3]
folded: >-
  one
  two
literal: |
  line 1
  line 2
set: !!set {a, b}
omap: !!omap [{x: 1}, {y: 2}]
binary: !!binary aGVsbG8=
3: int key
"""
    assert parse_yaml(text, "t.yaml").data == yaml.safe_load(text)


def test_lines_are_recorded_per_path() -> None:
    doc = parse_yaml(MINIMAL, "demo.yaml")
    assert doc.line(()) == 1
    assert doc.line(("requires", "kernel")) == 4
    assert doc.line(("steps", 1, "as")) == 12
    assert doc.key_line(("steps", 1), "expect_exit") == 13


# --------------------------------------------------------------------------- the model


def test_model_values_and_defaults() -> None:
    scenario = parse_scenario(MINIMAL, "some/dir/demo.yaml")
    assert scenario.path == Path("some/dir/demo.yaml")
    assert scenario.requires.kernel == (6, 3)
    assert scenario.requires.functions == ("do_set_acl",)
    assert scenario.probes[0].loader == DEFAULT_LOADER == "libbpf"
    assert scenario.setup == ()
    first, second = scenario.steps
    assert first.name == "setfacl -m u:test:rwx /tmp/file1"
    assert first.command == ("setfacl", "-m", "u:test:rwx", "/tmp/file1")
    assert first.user == DEFAULT_USER == "root"
    assert first.timeout == DEFAULT_TIMEOUT == 30
    assert (first.expect_exit, first.expect_stdout, first.expect_stderr) == (0, None, None)
    assert second.name == "setfacl -m u:test:rwx /etc/passwd"
    assert second.argv is None
    assert second.command == ("sh", "-c", "setfacl -m u:test:rwx /etc/passwd")
    assert (second.user, second.expect_exit) == ("test", 1)
    (event,) = scenario.events
    assert event.probe == "fentry"
    assert dict(event.match) == {"function": "do_set_acl", "dentry": "file1"}
    assert (event.count, event.min) == (None, DEFAULT_MIN)
    assert scenario.trace == ()
    assert scenario.collect.objdump == ("__fentry__", "do_set_acl")
    assert scenario.collect.live_text == ("do_set_acl",)
    assert scenario.collect.bpftrace_lv == ("do_set_acl",)


def test_count_sets_min_and_collect_overrides() -> None:
    text = MINIMAL.replace(
        "      match: {function: do_set_acl, dentry: file1}\n",
        "      count: 0\ncollect:\n  objdump: [do_set_acl.isra.0]\n  bpftrace_lv: []\n",
    )
    scenario = parse_scenario(text, "demo.yaml")
    assert (scenario.events[0].count, scenario.events[0].min) == (0, 0)
    assert dict(scenario.events[0].match) == {}
    assert scenario.collect.objdump == ("do_set_acl.isra.0",)
    assert scenario.collect.live_text == ("do_set_acl",)
    assert scenario.collect.bpftrace_lv == ()


def test_step_needs_argv_or_shell() -> None:
    with pytest.raises(ValueError):
        Step("x", None, None, "root", 0, None, None, 30)


# --------------------------------------------------------------------------- error texts


def test_malformed_yaml() -> None:
    text = "name: demo\ndescription: The seed: fentry\n"
    assert error_text(text) == "demo.yaml:2: invalid YAML: mapping values are not allowed here"


def test_malformed_yaml_with_context_is_one_line() -> None:
    text = "name: demo\nrequires:\n  functions: [do_set_acl\n"
    message = error_text(text)
    assert message == (
        "demo.yaml:4: invalid YAML: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at line 3)"
    )
    assert "\n" not in message


def test_unknown_key_at_top() -> None:
    text = MINIMAL + "bogus: 1\n"
    assert error_text(text) == (
        "demo.yaml:18: (top): unknown key 'bogus' (allowed: name, description, requires, "
        "probes, setup, steps, expect, collect)"
    )


def test_unknown_key_nested_reports_line_of_key() -> None:
    text = MINIMAL.replace("    expect_exit: 1\n", "    expect_exit: 1\n    exit: 1\n")
    assert error_text(text) == (
        "demo.yaml:14: steps[1]: unknown key 'exit' (allowed: name, run, shell, as, "
        "expect_exit, expect_stdout, expect_stderr, timeout)"
    )


def test_wrong_value_uses_x_expect() -> None:
    text = MINIMAL.replace("steps:\n", "steps:\n  - run: [id]\n", 1)
    text = text.replace("as: test", "as: Test")
    assert error_text(text) == "demo.yaml:13: steps[2].as: expected a user name"
    assert error_text(text.replace("as: Test", "as: 1000")) == (
        "demo.yaml:13: steps[2].as: expected a user name"
    )


def test_wrong_type_without_x_expect() -> None:
    text = MINIMAL.replace('"u:test:rwx"', "7")
    assert error_text(text) == "demo.yaml:10: steps[0].run[2]: expected a string, got an integer"


def test_unquoted_kernel_version() -> None:
    text = MINIMAL.replace('"6.3"', "6.3")
    assert error_text(text) == (
        'demo.yaml:4: requires.kernel: expected a quoted kernel version such as "6.3"'
    )


def test_enum() -> None:
    text = MINIMAL.replace("bpf.c\n", "bpf.c\n    loader: clang\n")
    assert error_text(text) == (
        "demo.yaml:9: probes[0].loader: expected one of 'libbpf', 'bcc', 'bpftrace', "
        "'command', got 'clang'"
    )


def test_missing_required_key() -> None:
    text = MINIMAL.replace('  kernel: "6.3"\n', "")
    assert error_text(text) == "demo.yaml:4: requires: missing required key 'kernel'"
    top = "# comment\n" + MINIMAL.split("steps:")[0]
    assert error_text(top) == "demo.yaml:2: (top): missing required key 'steps'"


def test_empty_steps() -> None:
    text = MINIMAL.split("steps:")[0] + "steps: []\n"
    assert error_text(text) == "demo.yaml:9: steps: expected a non-empty list of steps"


def test_both_run_and_shell() -> None:
    text = MINIMAL.replace("    as: test\n", "    as: test\n    run: [id]\n")
    assert error_text(text) == "demo.yaml:11: steps[1]: needs exactly one of 'run' or 'shell'"


def test_neither_run_nor_shell_in_setup() -> None:
    text = MINIMAL.replace("steps:\n", "setup:\n  - name: nothing\nsteps:\n", 1)
    assert error_text(text) == "demo.yaml:10: setup[0]: needs exactly one of 'run' or 'shell'"


def test_count_and_min_together() -> None:
    text = MINIMAL + "      count: 1\n      min: 1\n"
    assert error_text(text) == (
        "demo.yaml:16: expect.events[0]: use either 'count' or 'min', not both"
    )


def test_unknown_probe_referenced() -> None:
    text = MINIMAL.replace("- probe: fentry", "- probe: fexit")
    assert error_text(text) == (
        "demo.yaml:16: expect.events[0].probe: unknown probe 'fexit' (probes: fentry)"
    )


def test_duplicate_probe_name() -> None:
    text = MINIMAL.replace(
        "steps:\n", "  - name: fentry\n    source: bpf/acl/other.bpf.c\nsteps:\n", 1
    )
    assert error_text(text) == (
        "demo.yaml:9: probes[1].name: duplicate probe name 'fentry' (first at line 7)"
    )


def test_source_must_be_relative_without_dotdot_and_match_loader() -> None:
    expected = (
        "demo.yaml:8: probes[0].source: expected a relative path ending in .c, .py or .bt "
        "(not absolute, no '..')"
    )
    for bad in ("/abs/x.bpf.c", "bpf/../x.bpf.c", "bpf/x.h", "../x.py"):
        assert error_text(MINIMAL.replace("bpf/acl/fentry.bpf.c", bad)) == expected
    text = MINIMAL.replace("bpf/acl/fentry.bpf.c", "bpf/bcc/acl_bcc.py")
    assert error_text(text) == (
        "demo.yaml:8: probes[0].source: a .py source needs loader 'bcc', but the loader is 'libbpf'"
    )
    ok = text.replace(".py\n", ".py\n    loader: bcc\n")
    assert parse_scenario(ok, "demo.yaml").probes[0].loader == "bcc"


def test_match_values_must_be_scalars() -> None:
    text = MINIMAL.replace("dentry: file1", "dentry: [file1]")
    assert error_text(text) == (
        "demo.yaml:17: expect.events[0].match.dentry: expected a string, an integer or a boolean"
    )


def test_name_must_equal_stem() -> None:
    assert error_text(MINIMAL, "other.yaml") == (
        "other.yaml:1: name: name 'demo' must equal the file name stem 'other'"
    )


def test_first_error_in_document_order() -> None:
    text = MINIMAL.replace("- probe: fentry", "- probe: fexit").replace("name: demo", "name: x")
    assert error_text(text).startswith("demo.yaml:1: name: ")


def test_duplicate_key() -> None:
    text = MINIMAL.replace("    as: test\n", "    as: test\n    as: root\n")
    assert error_text(text) == "demo.yaml:13: steps[1]: duplicate key 'as' (first at line 12)"


def test_top_level_not_a_mapping() -> None:
    assert error_text("- a\n- b\n") == "demo.yaml:1: (top): expected a mapping, got a list"
    assert error_text("just text\n") == "demo.yaml:1: (top): expected a mapping, got a string"
    assert error_text("# nothing\n") == (
        "demo.yaml:1: (top): expected a mapping, got an empty document"
    )


def test_other_yaml_problems() -> None:
    assert error_text("a: &x [*x]\n") == (
        "demo.yaml:1: invalid YAML: recursive alias (a collection containing itself)"
    )
    assert error_text("name: !foo demo\n") == (
        "demo.yaml:1: invalid YAML: could not determine a constructor for the tag '!foo'"
    )
    assert error_text("a: 1\n? [complex]\n: 2\n") == (
        "demo.yaml:2: (top): invalid YAML: a mapping key must be a scalar (found unhashable key)"
    )
    assert error_text("a: 1\n---\nb: 2\n") == (
        "demo.yaml:2: invalid YAML: expected a single document in the stream at line 1, "
        "but found another document"
    )


def test_load_scenario_reports_basename(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(MINIMAL.replace("as: test", "as: ROOT"), encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    error = info.value
    assert (error.file, error.line, error.path, error.message) == (
        "demo.yaml",
        12,
        "steps[1].as",
        "expected a user name",
    )
    assert str(error) == "demo.yaml:12: steps[1].as: expected a user name"
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)


def test_load_scenario_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"^missing\.yaml: cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "demo.yaml"
    bad.write_bytes(b"name: demo\n\xff\n")
    with pytest.raises(ScenarioError, match=r"^demo\.yaml:2: not valid UTF-8$"):
        load_scenario(bad)


# --------------------------------------------------------------------------- finding


def test_find_and_list(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("x", encoding="utf-8")
    (tmp_path / "a.yaml").write_text("x", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    assert list_scenarios(tmp_path) == [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    assert list_scenarios(tmp_path / "absent") == []
    assert find_scenario("a", tmp_path) == tmp_path / "a.yaml"
    assert find_scenario("a.yaml", tmp_path) == tmp_path / "a.yaml"
    assert find_scenario(str(tmp_path / "b.yaml"), Path("/nonexistent")) == tmp_path / "b.yaml"
    with pytest.raises(ScenarioError) as info:
        find_scenario("c", tmp_path)
    assert str(info.value) == "unknown scenario 'c' (known: a, b)"


def test_find_rejects_dotdot_in_name(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        find_scenario("..", tmp_path)
    assert "may not contain '/' or '..'" in str(info.value)
    with pytest.raises(ScenarioError, match=r"may not contain '/' or '\.\.'"):
        find_scenario("a..b", tmp_path)


def test_find_rejects_slash_in_name(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yaml").write_text("x", encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        find_scenario("sub/a", tmp_path)
    assert str(info.value) == (
        "bad scenario 'sub/a': not an existing .yaml file, and scenario names may not "
        "contain '/' or '..'"
    )
    with pytest.raises(ScenarioError, match="may not contain"):
        find_scenario(str(tmp_path / "sub" / "missing.yaml"), tmp_path)


# --------------------------------------------------------------------------- the schema


def _subschemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every schema object inside ``schema`` (itself included)."""
    found = [schema]
    for keyword in ("properties", "patternProperties", "$defs"):
        for sub in schema.get(keyword, {}).values():
            found += _subschemas(sub)
    if "items" in schema:
        found += _subschemas(schema["items"])
    return found


def test_schema_is_json_and_closed() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    objects = [
        sub
        for sub in _subschemas(schema)
        if sub.get("type") == "object" or "properties" in sub or "patternProperties" in sub
    ]
    assert len(objects) >= 7
    for sub in objects:
        assert sub.get("additionalProperties") is False, sub
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    assert "oneOf" not in text and "anyOf" not in text and "allOf" not in text


def test_schema_defaults_match_code() -> None:
    defs = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))["$defs"]
    step = defs["step"]["properties"]
    assert step["as"]["default"] == DEFAULT_USER
    assert step["timeout"]["default"] == DEFAULT_TIMEOUT
    assert step["expect_exit"]["default"] == 0
    assert defs["probe"]["properties"]["loader"]["default"] == DEFAULT_LOADER
    assert defs["event"]["properties"]["min"]["default"] == DEFAULT_MIN


def test_users_own_programs_validate() -> None:
    """The shapes of upstream tools: bpftrace, commands, globals, maps and output checks."""
    for name in ("shapes-buffers", "shapes-maps", "shapes-tracepoint", "shapes-tools"):
        load_scenario(REPO / "scenarios" / f"{name}.yaml")
    text = MINIMAL.replace("bpf/acl/fentry.bpf.c", "bpf/shapes/acl.bt")
    assert error_text(text) == (
        "demo.yaml:8: probes[0].source: a .bt source needs loader 'bpftrace', but the loader "
        "is 'libbpf'")
    script = MINIMAL.replace("source: bpf/acl/fentry.bpf.c",
                             "loader: bpftrace\n    script: 'BEGIN { exit(); }'")
    assert parse_scenario(script, "demo.yaml").probes[0].tool_argv() == (
        "bpftrace", "-e", "BEGIN { exit(); }")
    wrong = MINIMAL.replace("source: bpf/acl/fentry.bpf.c",
                            "source: bpf/acl/fentry.bpf.c\n    script: x")
    assert error_text(wrong) == (
        "demo.yaml:9: probes[0].script: `script` is for loader bpftrace, not 'libbpf'")
