"""Per-kernel-range alternatives in scenarios (requires.alternatives) and their resolution."""

from __future__ import annotations

import pytest

from lab.scenario.load import load_scenario, parse_scenario
from lab.scenario.model import FENTRY_MIN_KERNEL, KernelRange, ScenarioError, kernel_version
from tests.helpers import REPO

BASE = """\
name: demo
description: A scenario with alternatives.
requires:
  kernel: "6.3"
  functions: [do_set_acl]
  alternatives:
    - kernel: {min: "5.12", below: "6.2"}
      functions: [ext4_set_acl]
      reason: "do_set_acl was added in 6.2"
      probes:
        - {name: fentry, source: bpf/acl-compat/ext4_acl_userns_fentry.bpf.c}
      expect:
        events:
          - {probe: fentry, match: {function: ext4_set_acl}, count: 1}
    - kernel: {below: "5.12"}
      functions: [ext4_set_acl]
probes:
  - name: fentry
    source: bpf/acl/fentry.bpf.c
steps:
  - run: [setfacl, -m, "u:test:rwx", /tmp/file1]
expect:
  events:
    - probe: fentry
      match: {function: do_set_acl}
  trace:
    - "do_set_acl: dentry=file1"
collect:
  objdump: [__fentry__, do_set_acl, ext4_set_acl]
"""


def error_text(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "demo.yaml")
    return str(info.value)


def test_kernel_version_of_debian_releases() -> None:
    assert kernel_version("6.12.117+deb13-cloud-amd64") == (6, 12, 117)
    assert kernel_version("6.1.0-50-cloud-amd64") == (6, 1, 0)
    assert kernel_version("5.10.0-32-cloud-amd64") == (5, 10, 0)
    assert kernel_version("6.3") == (6, 3)


def test_kernel_range_contains_overlaps_and_text() -> None:
    middle = KernelRange(min=(5, 12), below=(6, 2))
    assert middle.contains((5, 12)) and middle.contains((6, 1, 176))
    assert not middle.contains((6, 2)) and not middle.contains((5, 10, 0))
    assert str(middle) == "5.12 <= kernel < 6.2"
    old = KernelRange(below=(5, 12))
    assert str(old) == "kernel < 5.12" and old.contains((5, 10, 0))
    new = KernelRange(min=(6, 3))
    assert str(new) == "kernel >= 6.3" and new.contains((6, 12, 117))
    assert not middle.overlaps(old) and not old.overlaps(middle)
    assert not middle.overlaps(new)
    assert KernelRange(min=(6, 0)).overlaps(middle)
    assert KernelRange(below=(5, 13)).overlaps(middle)


def test_model_of_alternatives() -> None:
    scenario = parse_scenario(BASE, "demo.yaml")
    first, second = scenario.alternatives
    assert first.kernel == KernelRange(min=(5, 12), below=(6, 2))
    assert first.functions == ("ext4_set_acl",)
    assert first.reason == "do_set_acl was added in 6.2"
    assert first.probes is not None and first.probes[0].loader == "libbpf"
    assert first.events is not None and first.events[0].count == 1
    assert first.trace == ()  # expect given without trace: no trace lines expected
    assert first.collect is None
    assert (second.probes, second.events, second.trace, second.reason) == (None, None, None, "")
    assert scenario.target_functions == ("do_set_acl", "ext4_set_acl")
    assert scenario.variant is None and scenario.describe_variant() == "main"


def test_for_kernel_picks_the_range() -> None:
    scenario = parse_scenario(BASE, "demo.yaml")
    assert scenario.for_kernel((6, 12, 117)) is scenario
    assert scenario.for_kernel((6, 2, 0)) is scenario  # no alternative: the main one

    bookworm = scenario.for_kernel((6, 1, 0))
    assert bookworm.variant is scenario.alternatives[0]
    assert bookworm.describe_variant() == "requires.alternatives[0] (5.12 <= kernel < 6.2)"
    assert bookworm.requires.kernel == (5, 12)
    assert bookworm.requires.functions == ("ext4_set_acl",)
    assert [p.source for p in bookworm.probes] == [
        "bpf/acl-compat/ext4_acl_userns_fentry.bpf.c"]
    assert bookworm.events[0].match["function"] == "ext4_set_acl"
    assert bookworm.trace == ()
    # Artefacts default to the alternative's functions, not the scenario's collect.
    assert bookworm.collect.objdump == ("__fentry__", "ext4_set_acl")
    assert bookworm.collect.live_text == ("ext4_set_acl",)
    assert bookworm.alternatives == ()
    assert bookworm.for_kernel((6, 1, 0)) is bookworm

    bullseye = scenario.for_kernel((5, 10, 0))
    assert bullseye.requires.kernel == FENTRY_MIN_KERNEL == (5, 5)
    assert bullseye.probes == scenario.probes  # not overridden: inherited
    assert bullseye.events == scenario.events and bullseye.trace == scenario.trace
    # Steps and setup are never per kernel.
    assert bullseye.steps == scenario.steps == bookworm.steps


def test_shipped_acl_portable() -> None:
    scenario = load_scenario(REPO / "scenarios" / "acl-portable.yaml")
    assert scenario.target_functions == ("do_set_acl", "ext4_set_acl")
    expected = {
        (5, 10, 0): ("ext4_set_acl", "ext4_acl_inode_"),
        (6, 1, 0): ("ext4_set_acl", "ext4_acl_userns_"),
        (6, 12, 117): ("do_set_acl", "acl/f"),
    }
    for version, (function, source) in expected.items():
        resolved = scenario.for_kernel(version)
        assert resolved.requires.functions == (function,)
        assert all(source in p.source for p in resolved.probes), version
        assert all(e.match.get("function", function) == function for e in resolved.events)
        assert all((REPO / p.source).is_file() for p in resolved.probes)
    # A refused setfacl never reaches ext4_set_acl: the alternatives expect no event.
    old = scenario.for_kernel((5, 10, 0))
    refused = [e for e in old.events if e.match.get("dentry") == "passwd"]
    assert [e.count for e in refused] == [0]


@pytest.mark.parametrize(("change", "message"), [
    ('{min: "5.12", below: "6.2"}', None),
    ("{}", "demo.yaml:7: requires.alternatives[0].kernel: needs 'min', 'below' or both"),
    ('{min: "6.2", below: "5.12"}',
     "demo.yaml:7: requires.alternatives[0].kernel: 'min' 6.2 is not below 'below' 5.12: "
     "the range is empty"),
    ('{min: "6.2", below: "6.2"}',
     "demo.yaml:7: requires.alternatives[0].kernel: 'min' 6.2 is not below 'below' 6.2: "
     "the range is empty"),
    ("{min: 5.12}",
     'demo.yaml:7: requires.alternatives[0].kernel.min: expected a quoted kernel version '
     'such as "6.2"'),
    ('{max: "6.2"}',
     "demo.yaml:7: requires.alternatives[0].kernel: unknown key 'max' (allowed: min, below)"),
])
def test_kernel_range_errors(change: str, message: str | None) -> None:
    text = BASE.replace('{min: "5.12", below: "6.2"}', change)
    if message is None:
        parse_scenario(text, "demo.yaml")
    else:
        assert error_text(text) == message


def test_overlapping_alternatives() -> None:
    text = BASE.replace('kernel: {below: "5.12"}', 'kernel: {below: "6.0"}')
    assert error_text(text) == (
        "demo.yaml:15: requires.alternatives[1].kernel: overlaps requires.alternatives[0] "
        "(5.12 <= kernel < 6.2): ranges may not overlap")


def test_alternative_needs_functions() -> None:
    text = BASE.replace("    - kernel: {below: \"5.12\"}\n      functions: [ext4_set_acl]\n",
                        "    - kernel: {below: \"5.12\"}\n")
    assert error_text(text) == (
        "demo.yaml:15: requires.alternatives[1]: missing required key 'functions'")


def test_unknown_key_in_alternative() -> None:
    text = BASE.replace('      reason: "do_set_acl', '      steps: []\n      reason: "do_set_acl')
    assert error_text(text) == (
        "demo.yaml:9: requires.alternatives[0]: unknown key 'steps' (allowed: kernel, "
        "functions, reason, probes, expect, collect)")


def test_alternative_events_name_its_own_probes() -> None:
    text = BASE.replace("          - {probe: fentry, match: {function: ext4_set_acl}, count: 1}",
                        "          - {probe: fexit, match: {function: ext4_set_acl}, count: 1}")
    assert error_text(text) == (
        "demo.yaml:14: requires.alternatives[0].expect.events[0].probe: unknown probe 'fexit' "
        "(probes: fentry)")


def test_alternative_probe_loader_and_duplicates() -> None:
    text = BASE.replace("ext4_acl_userns_fentry.bpf.c}",
                        "ext4_acl_userns_fentry.bpf.c}\n"
                        "        - {name: fentry, source: bpf/acl/fexit.bpf.c}")
    assert error_text(text) == (
        "demo.yaml:12: requires.alternatives[0].probes[1].name: duplicate probe name "
        "'fentry' (first at line 11)")
    text = BASE.replace("ext4_acl_userns_fentry.bpf.c}",
                        "ext4_acl_userns_fentry.bpf.c}\n"
                        "        - {name: bcc, source: bpf/bcc/acl_bcc.py}")
    assert error_text(text) == (
        "demo.yaml:12: requires.alternatives[0].probes[1].source: a .py source needs loader "
        "'bcc', but the loader is 'libbpf'")
