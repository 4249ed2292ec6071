"""matrix.md: the matrix table as Markdown (GitHub-flavoured tables)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _code(text: str | None) -> str:
    return f"`{text}`" if text else "-"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") if text not in (None, "") else "-"


def _insns_cell(value: Mapping[str, Any] | None) -> str:
    if not value:
        return "-"
    return f"{_code(value['bytes'])} {_cell(value['text'])}"


def _status_cell(row: Mapping[str, Any]) -> str:
    status = str(row["status"])
    checks = row.get("expectations")
    if checks and status in ("passed", "failed"):
        status += f" ({checks['ok']}/{checks['total']} expectations)"
    if row.get("reason") and status != "passed":
        status += f": {row['reason']}"
    return _cell(status)


def _yes_no(value: object) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _bpftrace_text(row: Mapping[str, Any]) -> str | None:
    text = str(row.get("bpftrace") or "").removeprefix("bpftrace ")
    kind = row.get("bpftrace_probe")
    return f"{text} ({kind}:)" if text and kind else text or None


def render_markdown(matrix: Mapping[str, Any]) -> str:
    rows: list[dict[str, Any]] = matrix["releases"]
    lines = [f"# Kernel matrix: {matrix['scenario']}", ""]
    wall, total = matrix.get("wall_s"), matrix.get("sum_of_releases_s")
    lines.append(f"Run {matrix['run_id']}, --jobs {matrix.get('jobs')}: {wall} s in all "
                 f"(the releases' own times add up to {total} s; images "
                 f"{matrix.get('images_s')} s).")
    lines += ["", "| release | kernel | BTF | fentry/fexit trampolines | IBT | bpftrace "
              "| variant | scenario |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        tramp = row.get("trampolines")
        tramp_text = "?" if tramp is None else (
            f"{'yes' if tramp['supported'] else 'no'} ({tramp['why']})")
        lines.append(f"| {row['release']} | {_cell(row['kernel'])} | {_yes_no(row['btf'])} "
                     f"| {_cell(tramp_text)} | {_yes_no(row['ibt'])} | "
                     f"{_cell(_bpftrace_text(row))} | {_cell(row['variant'])} | "
                     f"{_status_cell(row)} |")
    lines += ["", "## `__fentry__` (static, debug vmlinux)", "",
              "| release | bytes | instructions |", "|---|---|---|"]
    for row in rows:
        fentry = row.get("fentry_static")
        lines.append(f"| {row['release']} | {_code(fentry and fentry['bytes'])} | "
                     f"{_cell(fentry and fentry['text'])} |")
    for fn in matrix["targets"]:
        lines += ["", f"## `{fn}`", "",
                  "| release | exists | signature (BTF) | static entry | live entry, detached "
                  "| live entry, attached | note |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            cell = row["functions"].get(fn) or {}
            exists = _yes_no(cell.get("exists"))
            if cell.get("exists") and not cell.get("traceable"):
                exists += ", not traceable"
            lines.append(
                f"| {row['release']} | {exists} | {_code(cell.get('signature'))} | "
                f"{_insns_cell(cell.get('static_entry'))} | "
                f"{_insns_cell(cell.get('live_detached'))} | "
                f"{_insns_cell(cell.get('live_attached'))} | {_cell(cell.get('note'))} |")
    lines += ["", "## Times (s)", "", "| release | up | facts | scenario | destroy | total |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        t = row["timings"]
        lines.append(f"| {row['release']} | {_cell(t.get('up_s'))} | {_cell(t.get('facts_s'))} "
                     f"| {_cell(t.get('run_s'))} | {_cell(t.get('destroy_s'))} | "
                     f"{_cell(t.get('total_s'))} |")
    bundles = [f"- {row['release']}: `{row['bundle']}`" for row in rows if row.get("bundle")]
    if bundles:
        lines += ["", "Results bundles (relative to this directory):", "", *bundles]
    return "\n".join(lines) + "\n"
