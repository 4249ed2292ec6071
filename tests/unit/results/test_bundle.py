"""Unit tests for lab.results.bundle: the run directory, `latest`, bounded text and junit.xml."""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.errors import LabFailure
from lab.results import bundle as results
from lab.results.bundle import ResultsBundle, run_id
from lab.results.check import Check
from tests.helpers import REPO

RUN_ID = re.compile(r"\d{8}T\d{9}Z(-\d+)?")


# --------------------------------------------------------------------------- run ids


def test_run_id_format() -> None:
    now = datetime.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)
    assert run_id(now) == "20250102T030405678Z"


def test_run_ids_sort_by_time() -> None:
    a = datetime.datetime(2025, 1, 2, 3, 4, 5, 9000, tzinfo=datetime.UTC)
    b = datetime.datetime(2025, 1, 2, 3, 4, 5, 10000, tzinfo=datetime.UTC)
    assert run_id(a) < run_id(b)


def test_run_id_now() -> None:
    assert RUN_ID.fullmatch(run_id())


# --------------------------------------------------------------------------- directories


def test_bundle_creates_its_directory_and_latest(tmp_path: Path) -> None:
    bundle = ResultsBundle(tmp_path / "results", "acl-basic")
    assert RUN_ID.fullmatch(bundle.run_id)
    assert bundle.scenario_dir == tmp_path / "results" / "acl-basic"
    assert bundle.path == bundle.scenario_dir / bundle.run_id
    assert bundle.path.is_dir()
    # summary.json exists from the start, saying the run is under way.
    assert [p.name for p in bundle.path.iterdir()] == ["summary.json"]
    assert json.loads((bundle.path / "summary.json").read_text()) == {
        "scenario": "acl-basic", "status": "running"}
    latest = bundle.scenario_dir / "latest"
    assert latest.is_symlink()
    assert os.readlink(latest) == bundle.run_id  # relative: the tree can be moved
    assert latest.resolve() == bundle.path.resolve()


def test_latest_follows_the_newest_run(tmp_path: Path) -> None:
    first = ResultsBundle(tmp_path, "demo")
    first.write_text("log.txt", "first\n")
    second = ResultsBundle(tmp_path, "demo")
    assert second.run_id != first.run_id
    latest = tmp_path / "demo" / "latest"
    assert os.readlink(latest) == second.run_id
    assert not (latest / "log.txt").exists()
    assert (first.path / "log.txt").read_text() == "first\n"
    leftovers = [p.name for p in (tmp_path / "demo").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temporary symlink was renamed over `latest`


def test_scenarios_have_their_own_latest(tmp_path: Path) -> None:
    a = ResultsBundle(tmp_path, "a")
    b = ResultsBundle(tmp_path, "b")
    assert (tmp_path / "a" / "latest").resolve() == a.path.resolve()
    assert (tmp_path / "b" / "latest").resolve() == b.path.resolve()


def test_bundles_in_the_same_millisecond_get_distinct_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "run_id", lambda now=None: "20250102T030405678Z")
    bundles = [ResultsBundle(tmp_path, "demo") for _ in range(3)]
    assert [b.run_id for b in bundles] == [
        "20250102T030405678Z", "20250102T030405678Z-2", "20250102T030405678Z-3"]
    assert all(b.path.is_dir() for b in bundles)
    assert os.readlink(tmp_path / "demo" / "latest") == "20250102T030405678Z-3"


def test_many_quick_bundles_are_all_distinct(tmp_path: Path) -> None:
    bundles = [ResultsBundle(tmp_path, "demo") for _ in range(20)]
    assert len({b.run_id for b in bundles}) == 20
    assert len({b.path for b in bundles}) == 20


# --------------------------------------------------------------------------- files


def test_write_text_json_and_jsonl(tmp_path: Path) -> None:
    bundle = ResultsBundle(tmp_path, "demo")
    assert bundle.write_text("notes.txt", "héllo\n") == bundle.path / "notes.txt"
    assert (bundle.path / "notes.txt").read_text(encoding="utf-8") == "héllo\n"

    path = bundle.write_json("summary.json", {"status": "passed", "where": tmp_path})
    assert json.loads(path.read_text()) == {"status": "passed", "where": str(tmp_path)}
    assert path.read_text().endswith("\n")

    rows = [{"probe_name": "fentry", "n": 1}, {"probe_name": "fexit", "n": 2}]
    path = bundle.write_jsonl("events.jsonl", rows)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    assert bundle.write_jsonl("empty.jsonl", []).read_text() == ""


def test_write_text_makes_subdirectories(tmp_path: Path) -> None:
    bundle = ResultsBundle(tmp_path, "demo")
    path = bundle.write_text("live/do_set_acl/before.txt", "x")
    assert path == bundle.path / "live" / "do_set_acl" / "before.txt"
    assert path.read_text() == "x"


def test_write_text_overwrites(tmp_path: Path) -> None:
    bundle = ResultsBundle(tmp_path, "demo")
    bundle.write_text("a.txt", "long first version")
    assert bundle.write_text("a.txt", "short").read_text() == "short"


def test_huge_text_is_cut_and_marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "TEXT_LIMIT", 10)
    bundle = ResultsBundle(tmp_path, "demo")
    data = bundle.write_text("big.txt", "0123456789" + "x" * 25).read_bytes()
    assert data == b"0123456789\n[fentry-lab: 25 more bytes cut]\n"


def test_text_at_the_limit_is_kept_whole(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "TEXT_LIMIT", 10)
    bundle = ResultsBundle(tmp_path, "demo")
    assert bundle.write_text("exact.txt", "0123456789").read_bytes() == b"0123456789"


def test_huge_json_is_bounded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "TEXT_LIMIT", 100)
    bundle = ResultsBundle(tmp_path, "demo")
    path = bundle.write_jsonl("events.jsonl", [{"n": i} for i in range(1000)])
    data = path.read_bytes()
    assert len(data) < 200
    assert b"more bytes cut]" in data


def test_text_that_is_not_utf8_is_written_safely(tmp_path: Path) -> None:
    # Output decoded with surrogateescape keeps undecodable bytes as lone surrogates.
    text = b"ok \xff\xfe end\n".decode("utf-8", "surrogateescape")
    bundle = ResultsBundle(tmp_path, "demo")
    data = bundle.write_text("out.txt", text).read_bytes()
    assert data == b"ok ?? end\n"


def test_cut_keeps_the_file_valid_utf8(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "TEXT_LIMIT", 5)
    bundle = ResultsBundle(tmp_path, "demo")
    data = bundle.write_text("big.txt", "é" * 10).read_bytes()
    text = data.decode("utf-8")  # raises when the cut falls inside "é"
    assert "more bytes cut" in text


def test_provisional_summary_carries_what_is_known(tmp_path: Path) -> None:
    bundle = ResultsBundle(tmp_path, "demo", {"lab": "rn-x", "release": "trixie"})
    assert json.loads((bundle.path / "summary.json").read_text()) == {
        "scenario": "demo", "status": "running", "lab": "rn-x", "release": "trixie"}
    bundle.write_json("summary.json", {"status": "passed"})
    assert json.loads((bundle.path / "summary.json").read_text()) == {"status": "passed"}
    assert [p.name for p in bundle.path.iterdir()] == ["summary.json"]  # no temporary left


KILLER = """
import sys
from pathlib import Path
from lab.results.bundle import ResultsBundle
root = Path(sys.argv[1])
print("go", flush=True)
while True:
    b = ResultsBundle(root, "demo")
    b.write_json("summary.json", {"status": "passed", "pad": "x" * 100000})
"""


def test_latest_always_has_a_summary_even_after_sigkill(tmp_path: Path) -> None:
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(tmp_path)], cwd=REPO,
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
        for _ in range(200):  # until a few bundles exist
            if len(list((tmp_path / "demo").glob("2*"))) > 3:
                break
            os.sched_yield()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        summary = json.loads((tmp_path / "demo" / "latest" / "summary.json").read_text())
        assert summary["status"] in ("running", "passed")


def test_full_results_disk_is_a_lab_failure(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = ResultsBundle(tmp_path, "demo")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lab.results.bundle.os.fsync", full)
    with pytest.raises(LabFailure, match="The results disk is full: could not write "
                                         + re.escape(str(bundle.path / "summary.json"))):
        bundle.write_json("summary.json", {"status": "passed"})
    # The provisional summary is still whole: never a 0-byte summary.json.
    assert json.loads((bundle.path / "summary.json").read_text())["status"] == "running"
    assert [p.name for p in bundle.path.iterdir()] == ["summary.json"]


def test_results_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(LabFailure, match=r"Could not write .*file/demo"):
        ResultsBundle(tmp_path / "file", "demo")


# --------------------------------------------------------------------------- junit.xml


def parse_junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuite"
    return root


def test_junit_counts_failures(tmp_path: Path) -> None:
    checks = [
        Check("step", "step 'a' exit status", "exit 0", "exit 0", True),
        Check("event", "fexit event retval=-1", "exactly 1", "0 matching of 3 events", False),
        Check("trace", "trace line 'x'", "a matching trace_pipe line", "none in 0 lines",
              False),
    ]
    bundle = ResultsBundle(tmp_path, "acl-basic")
    path = bundle.write_junit("acl-basic", checks, None, 12.345)
    assert path == bundle.path / "junit.xml"
    root = parse_junit(path)
    assert root.attrib == {"name": "acl-basic", "tests": "3", "failures": "2", "errors": "0",
                           "time": "12.35"}
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == [c.name for c in checks]
    assert all(c.get("classname") == "acl-basic" for c in cases)
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == checks[1].describe()
    assert failure.text == checks[1].describe()


def test_junit_error(tmp_path: Path) -> None:
    bundle = ResultsBundle(tmp_path, "demo")
    error = "The guest did not become ready within 180 s. " + "x" * 1000
    root = parse_junit(bundle.write_junit("demo", [], error, 0.0))
    assert root.get("tests") == "1"
    assert root.get("failures") == "0"
    assert root.get("errors") == "1"
    (case,) = root.findall("testcase")
    assert case.get("name") == "run"
    element = case.find("error")
    assert element is not None
    assert element.get("message") == error[:500]
    assert element.text == error


def test_junit_escapes_markup(tmp_path: Path) -> None:
    name = "step 'a & b' <stdout> \"quoted\""
    checks = [Check("step", name, "'<x>' in stdout", "'a & b\nc'", False)]
    bundle = ResultsBundle(tmp_path, 'sc"en<ario>')
    root = parse_junit(bundle.write_junit('sc"en<ario>', checks, "bad <thing> & more", 1.0))
    assert root.get("name") == 'sc"en<ario>'
    case = root.findall("testcase")[0]
    assert case.get("name") == name
    failure = case.find("failure")
    assert failure is not None
    assert failure.text == checks[0].describe()
    error = root.findall("testcase")[1].find("error")
    assert error is not None
    assert error.text == "bad <thing> & more"


def test_junit_with_no_checks(tmp_path: Path) -> None:
    root = parse_junit(ResultsBundle(tmp_path, "demo").write_junit("demo", [], None, 0.5))
    assert root.get("tests") == "0"
    assert root.findall("testcase") == []


def test_junit_with_control_characters_is_well_formed(tmp_path: Path) -> None:
    bundle = ResultsBundle(tmp_path, "demo")
    error = "qemu exited.\n    \x1b[0;1;31mFAILED\x1b[0m to start \x00unit\x07"
    checks = [Check("trace", "trace line 'x'", "a line", "got \x1b[1m bold", False)]
    root = parse_junit(bundle.write_junit("demo", checks, error, 1.0))
    assert root.get("errors") == "1"
