"""report.html, trace.json and the short text, rendered from recorded bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab.errors import UsageError
from lab.matrix.table import build_matrix
from lab.results.report import try_write_report, write_report
from lab.results.report.calls import pair_calls, retval_text
from lab.results.report.listing import find_run, list_runs
from lab.results.report.matrix import write_matrix_report
from lab.results.report.text import short_text
from tests.helpers import REPO

DATA = REPO / "tests" / "data"
RECORDED = sorted(p for p in (DATA / "report").iterdir() if p.is_dir())
MATRIX = DATA / "matrix" / "acl-portable"
RELEASES = sorted(MATRIX.glob("*/acl-portable/*"))


def copy(src: Path, tmp_path: Path) -> Path:
    out = tmp_path / src.name
    shutil.copytree(src, out)
    return out


@pytest.mark.parametrize("src", RECORDED + RELEASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recorded_bundle_renders(src: Path, tmp_path: Path) -> None:
    bundle = copy(src, tmp_path)
    html_path, trace_path = write_report(bundle)
    html = html_path.read_text()
    assert "<html" in html and "</html>" in html
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html
    trace = json.loads(trace_path.read_text())
    assert isinstance(trace["traceEvents"], list)
    if not (src / "summary.json").exists():
        assert "missing: summary.json" in html


def test_passed_bundle_shows_the_picture_the_trampoline_and_the_calls(tmp_path: Path) -> None:
    bundle = copy(DATA / "report" / "acl-basic", tmp_path)
    html = write_report(bundle)[0].read_text()
    for row in ("static", "before", "attached", "after"):
        assert f'data-row="{row}"' in html
    assert html.count("insn call patched") + html.count("insn tramp patched") >= 2
    assert "bpf_trampoline_" in html and "bpf_prog_" in html
    assert "__bpf_prog_enter" in html and "do_set_acl+0x9" in html
    assert "= -1 EPERM" in html and "IBT configured, not active" in html
    assert "KASLR slide" in html and "untouched" in html


def test_a_7x_kernel_jumps_into_the_trampoline_and_the_report_says_so(tmp_path: Path) -> None:
    """Recorded on trixie-backports (7.3.4): the entry is patched with e9, not e8."""
    bundle = copy(DATA / "report" / "acl-portable-7.3", tmp_path)
    html = write_report(bundle)[0].read_text()
    assert "Attached: jmp bpf_trampoline_" in html and "jmp bpf_trampoline_" in html
    assert "do_set_acl entry: jmp bpf_trampoline_" in html
    assert "a call, not a jump" not in html
    assert "insn tramp patched" in html and "<b>jmp bpf_trampoline_" in html


def test_error_bundle_puts_the_reason_first(tmp_path: Path) -> None:
    bundle = copy(DATA / "report" / "error-acl-killed", tmp_path)
    html = write_report(bundle)[0].read_text()
    assert html.index('id="error"') < html.index("<h2>Phases")
    assert "missing: events.jsonl" in html


def test_untrusted_text_is_escaped(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "summary.json").write_text(json.dumps({"scenario": "<script>x</script>",
                                                     "status": "passed"}))
    (bundle / "events.jsonl").write_text(json.dumps(
        {"probe": "fentry", "function": "f", "comm": "<b>c", "pid": 1, "ts_ns": 1}) + "\n{bad\n")
    html = write_report(bundle)[0].read_text()
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    assert "&lt;b&gt;c" in html and "unreadable: events.jsonl" in html


def test_an_empty_folder_still_gets_a_report(tmp_path: Path) -> None:
    html = write_report(tmp_path)[0].read_text()
    assert "missing: summary.json" in html and "missing: kernel.json" in html


def test_a_failed_render_is_a_warning_noted_in_the_bundle(tmp_path: Path) -> None:
    (tmp_path / "report.html").mkdir()  # cannot be written
    problem = try_write_report(tmp_path)
    assert problem is not None and "report.html not written" in problem
    assert (tmp_path / "report-error.txt").exists()


def test_calls_pair_by_task_and_name_the_errno() -> None:
    events = [
        {"probe": "fentry", "function": "f", "comm": "a", "pid": 1, "uid": 0, "d": "x",
         "ts_ns": 1_000_000},
        {"probe": "fentry", "function": "f", "comm": "b", "pid": 2, "uid": 1000, "d": "y",
         "ts_ns": 2_000_000},
        {"probe": "fexit", "function": "f", "comm": "b", "pid": 2, "uid": 1000, "d": "y",
         "retval": -1, "ts_ns": 4_500_000},
        {"probe": "fexit", "function": "f", "comm": "c", "pid": 3, "retval": 0, "ts_ns": 5},
    ]
    calls = pair_calls(events)
    assert [c.line() for c in calls] == [
        "c[3] f() = 0",
        "a[1] uid=0 f(x) = ?",
        "b[2] uid=1000 f(y) = -1 EPERM 2.5 ms",
    ]
    assert retval_text(-13) == "-13 EACCES" and retval_text(-99999) == "-99999"


def test_an_event_without_a_function_is_a_record_not_a_call() -> None:
    """A user's ring-buffer record (or a tracepoint's) has fields, not arguments and a
    return value: it is listed as `probe: k=v`, never as `?(…) = ?`."""
    events = [{"probe_name": "opensnoop", "comm": "cat", "pid": 7, "uid": 1000,
               "filename": "/etc/passwd", "flags": 0, "ts_ns": 10}]
    (call,) = pair_calls(events)
    assert call.record
    assert call.line() == "cat[7] uid=1000 opensnoop: filename=/etc/passwd, flags=0"


def test_short_text_has_the_bytes_and_one_line_per_call() -> None:
    text = short_text(DATA / "report" / "acl-basic")
    assert "call bpf_trampoline_" in text and "|0f 1f 44 00 00|" in text
    assert "uid=1000 do_set_acl(passwd, system.posix_acl_access) = -1 EPERM" in text


def test_matrix_report_compares_the_releases(tmp_path: Path) -> None:
    run_dir = copy(MATRIX, tmp_path)
    (run_dir / "matrix.json").write_text(json.dumps(build_matrix(run_dir)))
    html = write_matrix_report(run_dir).read_text()
    for release in ("bullseye", "bookworm", "trixie"):
        assert f"<th>{release}</th>" in html
    assert html.count("/report.html\"") == 3
    assert "http://" not in html and "https://" not in html


def test_results_listing_finds_the_newest_or_a_named_run(tmp_path: Path) -> None:
    for run_id in ("20260101T000000000Z", "20260102T000000000Z"):
        d = tmp_path / "acl-basic" / run_id
        d.mkdir(parents=True)
        (d / "summary.json").write_text('{"status": "passed"}')
    (tmp_path / "acl-basic" / "latest").symlink_to("20260102T000000000Z")
    assert [r.run_id for r in list_runs(tmp_path)] == ["20260101T000000000Z",
                                                       "20260102T000000000Z"]
    assert find_run(tmp_path, None).run_id == "20260102T000000000Z"
    assert find_run(tmp_path, "20260101T000000000Z").status == "passed"
    assert find_run(tmp_path, "acl-basic").run_id == "20260102T000000000Z"
    with pytest.raises(UsageError):
        find_run(tmp_path, "nope")


def test_outcome_text_ends_with_the_short_version(tmp_path: Path) -> None:
    from lab.run.runner import Outcome
    from lab.views import outcome_text

    bundle = copy(DATA / "report" / "acl-basic", tmp_path)
    write_report(bundle)
    text = outcome_text("acl-basic", Outcome("passed", bundle, []))
    assert "attached  66 0f 1f 00 |e8 " in text
    assert "setfacl[230] uid=1000 do_set_acl(passwd, system.posix_acl_access) = -1 EPERM" in text
    assert text.endswith(f"report: {bundle / 'report.html'}")
