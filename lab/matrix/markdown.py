"""matrix.md: the matrix table as Markdown (GitHub-flavoured tables)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.matrix.rows import FunctionCell, Matrix, ReleaseRow


def _code(text: str | None) -> str:
    return f"`{text}`" if text else "-"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") if text not in (None, "") else "-"


def _insns_cell(value: Mapping[str, Any] | None) -> str:
    if not value:
        return "-"
    return f"{_code(value['bytes'])} {_cell(value['text'])}"


def _status_cell(row: ReleaseRow) -> str:
    status = row.status
    checks = row.expectations
    if checks and status in ("passed", "failed"):
        status += f" ({checks.ok}/{checks.total} expectations)"
    if row.reason and status != "passed":
        status += f": {row.reason}"
    return _cell(status)


def _yes_no(value: object) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _bpftrace_text(row: ReleaseRow) -> str | None:
    text = str(row.bpftrace or "").removeprefix("bpftrace ")
    kind = row.bpftrace_probe
    return f"{text} ({kind}:)" if text and kind else text or None


def ibt_text(row: ReleaseRow) -> str | None:
    """Built in or not, and whether the running kernel enforces it."""
    if row.ibt is None:
        return "?"
    if not row.ibt:
        return "no"
    if row.ibt_active is None:
        return "built in"
    return "built in, active" if row.ibt_active else "built in, not active (CPU)"


def render_markdown(matrix: Matrix) -> str:
    rows = matrix.releases
    lines = [f"# Kernel matrix: {matrix.scenario}", ""]
    lines.append(f"Run {matrix.run_id}, --jobs {matrix.jobs}: {matrix.wall_s} s in all "
                 f"(the releases' own times add up to {matrix.sum_of_releases_s} s; images "
                 f"{matrix.images_s} s).")
    lines += ["", "| release | kernel | BTF | fentry/fexit trampolines | IBT | bpftrace "
              "| libbpf | variant | scenario |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        tramp = row.trampolines
        tramp_text = "?" if tramp is None else (
            f"{'yes' if tramp.supported else 'no'} ({tramp.why})")
        lines.append(f"| {row.release} | {_cell(row.kernel)} | {_yes_no(row.btf)} "
                     f"| {_cell(tramp_text)} | {_cell(ibt_text(row))} | "
                     f"{_cell(_bpftrace_text(row))} | "
                     f"{_cell(str(row.libbpf or '').removeprefix('libbpf ') or None)} | "
                     f"{_cell(row.variant)} | "
                     f"{_status_cell(row)} |")
    lines += ["", "## `__fentry__` (static, debug vmlinux)", "",
              "| release | bytes | instructions |", "|---|---|---|"]
    for row in rows:
        fentry = row.fentry_static
        lines.append(f"| {row.release} | {_code(fentry['bytes'] if fentry else None)} | "
                     f"{_cell(fentry['text'] if fentry else None)} |")
    for fn in matrix.targets:
        lines += ["", f"## `{fn}`", "",
                  "| release | exists | signature (BTF) | static entry | live entry, detached "
                  "| live entry, attached | note |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            lines.append(_function_line(row.release, row.functions.get(fn)))
    lines += ["", "## Times (s)", "", "| release | up | facts | scenario | destroy | total |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        t = row.timings
        lines.append(f"| {row.release} | {_cell(t.get('up_s'))} | {_cell(t.get('facts_s'))} "
                     f"| {_cell(t.get('run_s'))} | {_cell(t.get('destroy_s'))} | "
                     f"{_cell(t.get('total_s'))} |")
    bundles = [f"- {row.release}: `{row.bundle}`" for row in rows if row.bundle]
    if bundles:
        lines += ["", "Results bundles (relative to this directory):", "", *bundles]
    return "\n".join(lines) + "\n"


def _function_line(release: str, cell: FunctionCell | None) -> str:
    if cell is None:
        return f"| {release} | ? | - | - | - | - | - |"
    exists = _yes_no(cell.exists)
    if cell.exists and not cell.traceable:
        exists += ", not traceable"
    return (f"| {release} | {exists} | {_code(cell.signature)} | "
            f"{_insns_cell(cell.static_entry)} | {_insns_cell(cell.live_detached)} | "
            f"{_insns_cell(cell.live_attached)} | {_cell(cell.note)} |")
