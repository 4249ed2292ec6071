"""Statistics and rendering of the probe-cost benchmark, from a recorded run (TCG, trixie)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from lab.bench.probes import trigger_for
from lab.bench.render import TCG_NOTE, markdown_report, svg_chart, text_report
from lab.bench.stats import compare, figures_from, parse_mode

RECORDED = Path(__file__).with_name("recorded-bench.json")


@pytest.fixture
def recorded() -> dict[str, Any]:
    value = json.loads(RECORDED.read_text())
    assert isinstance(value, dict)
    return value


def raw_lines(recorded: dict[str, Any]) -> list[dict[str, Any]]:
    return [m["raw"] for m in recorded["kernels"][0]["modes"]]


def test_recomputed_figures_match_the_recorded_ones(recorded: dict[str, Any]) -> None:
    figures = figures_from(raw_lines(recorded))
    for fig, saved in zip(figures, recorded["kernels"][0]["modes"], strict=True):
        assert fig.mode == saved["mode"]
        assert fig.verified
        assert round(fig.median, 1) == saved["median_calls_s"]
        assert fig.added_ns == pytest.approx(saved["added_ns"], abs=0.01)


def test_added_ns_and_ratio_follow_from_the_medians() -> None:
    def line(mode: str, rate: float, hooked: bool = True) -> dict[str, Any]:
        calls = int(rate)
        return {"mode": mode, "status": "measured", "calls": calls * 3,
                "samples": [{"calls": calls, "ns": 1e9}] * 3,
                "hits": {mode: calls * 3} if hooked else {}}

    figs = {f.mode: f for f in figures_from([line("base", 10e6, False), line("fentry", 8e6),
                                             line("kprobe", 5e6)])}
    assert figs["base"].added_ns == 0
    assert figs["fentry"].added_ns == pytest.approx(25.0)   # 125 ns - 100 ns
    assert figs["kprobe"].added_ns == pytest.approx(100.0)  # 200 ns - 100 ns
    assert figs["fentry"].ratio_to_kprobe == pytest.approx(0.25)
    assert figs["kprobe"].spread_pct == 0


def test_a_probe_that_missed_calls_is_a_failure_not_a_fast_result() -> None:
    fig = parse_mode({"mode": "fentry", "status": "measured", "calls": 1000,
                      "samples": [{"calls": 1000, "ns": 1e6}], "hits": {"fentry": 0}})
    assert fig.status == "failed"
    assert not fig.verified
    assert "fentry 0 of 1000" in fig.reason
    assert figures_from([{"mode": "base", "status": "measured", "calls": 10,
                          "samples": [{"calls": 10, "ns": 1e3}], "hits": {}},
                         fig.as_dict() | {"status": "measured", "samples": [], "calls": 1000,
                                          "hits": {"fentry": 0}}])[1].added_ns is None


def test_a_skipped_mode_keeps_its_reason() -> None:
    fig = parse_mode({"mode": "kprobe-multi", "status": "skipped",
                      "reason": "attaching failed: Operation not supported"})
    assert fig.status == "skipped" and "not supported" in fig.reason
    assert fig.added_ns is None


def test_text_and_markdown_show_every_mode_references_and_the_tcg_note(
        recorded: dict[str, Any]) -> None:
    text = text_report(recorded)
    md = markdown_report(recorded)
    for mode in ("base", "fentry", "fexit", "fentry+fexit", "kprobe", "kretprobe",
                 "kprobe-multi", "raw-tp"):
        assert f"\n{mode} " in text
        assert f"| {mode} |" in md
    assert "Starovoitov 2019" in text and "Nakryiko 2020" in md
    assert TCG_NOTE in text and TCG_NOTE in md
    assert "verified" in text


def test_skipped_and_failed_modes_render(recorded: dict[str, Any]) -> None:
    kernel = recorded["kernels"][0]
    kernel["modes"][6] = {"mode": "kprobe-multi", "status": "skipped",
                          "reason": "attaching failed: Operation not supported"}
    kernel["modes"][1]["verified"] = False
    text = text_report(recorded)
    assert "kprobe-multi  skipped" in text and "FAILED" in text


def test_svg_is_self_contained_and_has_one_bar_per_mode(recorded: dict[str, Any]) -> None:
    second = json.loads(json.dumps(recorded["kernels"][0]))
    second["release"] = "bookworm"
    recorded["kernels"].append(second)
    svg = svg_chart(recorded)
    root = ET.fromstring(svg)  # well-formed XML
    assert "<script" not in svg and "href" not in svg
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("rx")]
    assert len(bars) == 7 * 2  # every mode but base, for each kernel
    assert "relative only" in svg


@pytest.mark.parametrize(("function", "trigger"), [("__x64_sys_getpgid", "getpgid"),
                                                   ("__set_task_comm", "comm")])
def test_the_trigger_follows_the_function(function: str, trigger: str) -> None:
    assert trigger_for(function) == trigger


@pytest.mark.parametrize("bad", ["", "do getpgid", "x;rm -rf /", "1abc"])
def test_a_bad_function_name_is_refused_before_any_lab(bad: str, tmp_path: Path) -> None:
    from lab.bench.probes import run_bench
    from lab.config import Settings
    from lab.errors import UsageError

    def no_lab(settings: Settings) -> Any:
        raise AssertionError("no lab must be started")

    with pytest.raises(UsageError, match="not a kernel function name"):
        run_bench(Settings(results=tmp_path), function=bad, backend_factory=no_lab)
    assert not (tmp_path / "bench").exists()


def test_paired_rounds_cancel_a_drifting_host() -> None:
    """Round 2 runs everything at half speed: paired, the cost per call stays that of each
    round's own base; unpaired medians would mix the rounds."""
    def line(mode: str, rates: list[float]) -> dict[str, Any]:
        calls = [int(r) for r in rates]
        return {"mode": mode, "status": "measured", "calls": sum(calls),
                "samples": [{"calls": c, "ns": 1e9} for c in calls],
                "hits": {mode: sum(calls)} if mode != "base" else {}}

    # Round 1: base 100 ns, kprobe 200 ns; round 2 (host twice slower): 200 and 400 ns;
    # round 3 like round 1. Paired: kprobe adds 100, 200, 100 -> median 100.
    raws = [line("base", [10e6, 5e6, 10e6]), line("kprobe", [5e6, 2.5e6, 5e6])]
    paired = {f.mode: f for f in compare([parse_mode(r) for r in raws], paired=True)}
    assert paired["kprobe"].added_ns == pytest.approx(100.0)
    assert paired["kprobe"].ratio_to_kprobe == pytest.approx(1.0)
    assert paired["base"].added_ns == 0


def test_rounds_merge_into_one_mode_and_say_so() -> None:
    from lab.bench.probes import _merged

    one = {"mode": "fentry", "status": "measured", "calls": 10,
           "samples": [{"calls": 10, "ns": 1e3}], "hits": {"fentry": 10}}
    merged = _merged("fentry", [one, one | {"calls": 20, "hits": {"fentry": 20},
                                            "samples": [{"calls": 20, "ns": 1e3}]}],
                     "getpgid", "__x64_sys_getpgid")
    assert merged["rounds"] == 2 and merged["calls"] == 30 and merged["verified"]
    assert merged["rates"] == [1e7, 2e7]
    skipped = _merged("raw-tp", [{"mode": "raw-tp", "status": "skipped", "reason": "no"}],
                      "getpgid", "__x64_sys_getpgid")
    assert skipped["status"] == "skipped" and skipped["reason"] == "no"
    missed = one | {"hits": {"fentry": 0}}
    assert "no hits at all" in _merged("fentry", [missed], "getpgid", "f")["reason"]
