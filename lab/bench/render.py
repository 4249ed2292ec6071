"""bench.json -> the table a person reads (text and Markdown) and an inline SVG bar chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from lab.bench.stats import REFERENCES

TCG_NOTE = ("These figures come from an emulated CPU (QEMU TCG): absolute numbers mean "
            "nothing, only the ratios between modes of one run do.")
HEADER = ("mode", "calls/s (median)", "spread", "ns added/call", "x kprobe", "hits")


def _num(value: object, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def mode_rows(kernel: Mapping[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for m in kernel.get("modes", []):
        if m["status"] == "skipped":
            rows.append((m["mode"], "skipped", "", "", "", m.get("reason", "")[:70]))
            continue
        hits = "verified" if m.get("verified") else "FAILED"
        if m["mode"] == "base":
            hits = "-"
        rows.append((m["mode"], f"{m['median_calls_s'] / 1e6:.3f} M",
                     f"±{m['spread_pct'] / 2:.1f}%", _num(m.get("added_ns"), "+.1f"),
                     _num(m.get("ratio_to_kprobe"), ".2f"), hits))
    return rows


def reference_rows() -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for ref in REFERENCES:
        for mode, ns in ref.get("added_ns", {}).items():
            rows.append((f"{mode} [{ref['source'].split(' (')[0]}]", "", "", f"+{ns:.0f}",
                         f"{ns / ref['added_ns']['kprobe']:.2f}", ref["function"]))
        mcalls = ref.get("mcalls_s", {})
        for mode, rate in mcalls.items():
            added = 1e3 / rate - 1e3 / mcalls["base"]
            ratio = added / (1e3 / mcalls["kprobe"] - 1e3 / mcalls["base"])
            rows.append((f"{mode} [{ref['source'].split(' (')[0]}]", f"{rate:.2f} M", "",
                         f"+{added:.1f}", f"{ratio:.2f}", ref["function"]))
    return rows


def _title(kernel: Mapping[str, Any]) -> str:
    return (f"{kernel.get('release', '?')} (kernel {kernel.get('kernel', '?')}, "
            f"{kernel.get('accel', '?')}): {kernel.get('function', '?')} via "
            f"{kernel.get('trigger', '?')}, {_samples(kernel)}")


def _samples(kernel: Mapping[str, Any]) -> str:
    if "rounds" in kernel:  # one sample of every mode per round, ns added paired by round
        return (f"{kernel['rounds']} of {kernel.get('samples', '?')} rounds of one sample per "
                "mode (ns added: median of each round's difference with its base)")
    return f"{kernel.get('samples', '?')} samples"


def text_report(result: Mapping[str, Any]) -> str:
    def table(rows: Sequence[Sequence[str]]) -> str:
        cells = [list(HEADER), *[list(row) for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                         .rstrip() for row in cells)

    return _report(result, table)


def markdown_report(result: Mapping[str, Any]) -> str:
    def md(rows: Sequence[Sequence[str]]) -> str:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(lines)

    return "# Probe cost\n\n" + _report(result, md)


def _report(result: Mapping[str, Any], fmt: Any) -> str:
    parts = []
    for kernel in result.get("kernels", []):
        parts.append(_title(kernel))
        parts.append(fmt(mode_rows(kernel)))
        if kernel.get("error"):
            parts.append(f"error: {kernel['error']}")
    parts.append("Published reference figures (bare metal):")
    parts.append(fmt(reference_rows()))
    if any(k.get("accel") == "tcg" for k in result.get("kernels", [])):
        parts.append(TCG_NOTE)
    paired = any("rounds" in k for k in result.get("kernels", []))
    parts.append("ns added/call = 1e9/calls_s(mode) - 1e9/calls_s(base)"
                 + (", the median over rounds of each round's own base" if paired else "")
                 + "; x kprobe = that over kprobe's; hits verified = every attached program "
                 "counted every call.")
    return "\n\n".join(parts) + "\n"


COLOURS = ("#3b6ea8", "#c0504d", "#9bbb59", "#8064a2", "#f79646")


def _tcg_label(kernels: Sequence[Mapping[str, Any]]) -> str:
    return "(emulated CPU: relative only)" if any(k.get("accel") == "tcg" for k in kernels) else ""


def _kernel_label(kernel: Mapping[str, Any]) -> str:
    return f"{kernel.get('release', '?')} {kernel.get('kernel', '')}"


def svg_chart(result: Mapping[str, Any]) -> str:
    """Grouped horizontal bars: ns added per call, one group per mode, one bar per kernel."""
    kernels = list(result.get("kernels", []))
    modes: list[str] = []
    for kernel in kernels:
        for m in kernel.get("modes", []):
            if m["mode"] != "base" and m["mode"] not in modes:
                modes.append(m["mode"])
    values = {(i, m["mode"]): m.get("added_ns") for i, k in enumerate(kernels)
              for m in k.get("modes", [])}
    peak = max([v for v in values.values() if v is not None and v > 0] or [1.0])
    bar, gap, left, width = 16, 10, 120, 420
    group = bar * max(1, len(kernels)) + gap
    top = 40
    height = top + group * len(modes) + 20 * len(kernels) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" '
           f'height="{height}" font-family="system-ui, sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="#fff"/>',
           f'<text x="10" y="20" font-size="14" font-weight="600">ns added per call '
           f"{_tcg_label(kernels)}</text>"]
    for g, mode in enumerate(modes):
        y0 = top + g * group
        out.append(f'<text x="{left - 8}" y="{y0 + bar * len(kernels) / 2 + 4}" '
                   f'text-anchor="end">{escape(mode)}</text>')
        for i in range(len(kernels)):
            value = values.get((i, mode))
            y = y0 + i * bar
            if value is None:
                out.append(f'<text x="{left + 4}" y="{y + bar - 4}" fill="#888">skipped</text>')
                continue
            w = max(1.0, width * max(value, 0.0) / peak)
            out.append(f'<rect x="{left}" y="{y + 1}" width="{w:.1f}" height="{bar - 2}" '
                       f'fill="{COLOURS[i % len(COLOURS)]}" rx="2"/>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}">{value:+.1f}</text>')
    y = top + group * len(modes) + 10
    for i, kernel in enumerate(kernels):
        out.append(f'<rect x="{left}" y="{y + i * 20}" width="12" height="12" '
                   f'fill="{COLOURS[i % len(COLOURS)]}"/>')
        out.append(f'<text x="{left + 18}" y="{y + i * 20 + 11}">'
                   f"{escape(_kernel_label(kernel))}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
