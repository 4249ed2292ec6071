"""The matrix table, from the files a matrix run recorded (so it can be rebuilt and tested
from recorded runs), and merging runs made on several machines into one table.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError, LabFailure
from lab.matrix.disasm import (
    ENTRY_BYTES,
    bpftrace_kind,
    entry_prefix,
    insns_json,
    live_json,
    parse_objdump,
    signature_from_bpftrace,
)
from lab.matrix.markdown import render_markdown
from lab.matrix.rows import Expectations, FunctionCell, Matrix, ReleaseRow, Trampolines
from lab.results.bundle import write_atomic, write_json
from lab.scenario.model import format_version, kernel_version

FENTRY_SINCE = (5, 5)  # BPF trampolines (fentry/fexit) appeared in Linux 5.5
NOT_APPLICABLE = "not applicable"
LAB_ERROR = "lab error"


@dataclass(frozen=True)
class MatrixRun:
    path: Path
    matrix: dict[str, Any]
    markdown: str

    @property
    def exit_code(self) -> int:
        """0 when every release passed or does not apply, 2 on a lab failure, else 1."""
        statuses = [row["status"] for row in self.matrix["releases"]]
        if LAB_ERROR in statuses:
            return LabFailure.default_code
        return 0 if all(s in ("passed", NOT_APPLICABLE) for s in statuses) else 1


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def build_matrix(run_dir: Path) -> dict[str, Any]:
    """matrix.json's content, from the files a matrix run recorded in run_dir."""
    return read_matrix(run_dir).as_json()


def read_matrix(run_dir: Path) -> Matrix:
    """The typed table, from the files a matrix run recorded in run_dir."""
    run = _read_json(run_dir / "run.json") or {}
    targets: list[str] = list(run.get("targets", []))
    rows = [_release_row(run_dir / release, release, targets, run)
            for release in run.get("releases", [])]
    timing = _read_json(run_dir / "timing.json") or {}
    return Matrix(
        scenario=run.get("scenario"),
        run_id=run.get("run_id") or run_dir.name,
        started=run.get("started"),
        jobs=run.get("jobs"),
        targets=targets,
        wall_s=timing.get("wall_s"),
        images_s=timing.get("images_s"),
        sum_of_releases_s=round(sum(row.timings.get("total_s", 0.0) for row in rows), 1),
        releases=rows,
    )


def _release_row(directory: Path, release: str, targets: Sequence[str],
                 run: Mapping[str, Any]) -> ReleaseRow:
    record = _read_json(directory / "release.json") or {
        "status": LAB_ERROR, "reason": "the release did not record a result"}
    facts = _read_json(directory / "facts" / "facts.json") or {}
    kernel: dict[str, Any] = facts.get("kernel") or {}
    config = kernel.get("config") or {}
    version = kernel.get("version") or (
        list(kernel_version(record["kernel"])) if record.get("kernel") else None)
    bundle = directory / record["bundle"] if record.get("bundle") else None
    live = (_read_json(bundle / "live-text.json") if bundle else None) or {}
    summary = (_read_json(bundle / "summary.json") if bundle else None) or {}
    fentry = parse_objdump(_read_text(directory / "facts" / "objdump-__fentry__.txt") or "")
    tools = kernel.get("tools") or {}
    functions = {}
    for fn in targets:
        readings = live.get(fn) or {}
        functions[fn] = _function_cell(directory, fn, facts, readings, "attached" in readings,
                                       record, run, version)
    return ReleaseRow(
        release=release,
        kernel=kernel.get("release") or record.get("kernel"),
        version=version,
        btf=bool(kernel.get("btf")) if kernel else None,
        trampolines=trampoline_support(version, config) if kernel else None,
        ibt=config.get("CONFIG_X86_KERNEL_IBT") == "y" if kernel else None,
        ibt_active=kernel.get("ibt_active") if kernel else None,
        bpftrace=tools.get("bpftrace"),
        libbpf=tools.get("libbpf"),
        bpftrace_probe=bpftrace_kind(tools.get("bpftrace")),
        fentry_static=insns_json(fentry[:ENTRY_BYTES]) if fentry else None,
        variant=record.get("variant"),
        status=record["status"],
        reason=record.get("reason"),
        expectations=_expectations(summary),
        bundle=str(bundle.relative_to(directory.parent)) if bundle else None,
        timings=record.get("timings") or {},
        functions=functions,
    )


def trampoline_support(version: Sequence[int] | None,
                       config: Mapping[str, str]) -> Trampolines:
    """fentry/fexit need BPF trampolines: Linux >= 5.5 with direct ftrace calls and the JIT."""
    reasons = []
    if version is None or tuple(version) < FENTRY_SINCE:
        reasons.append(f"kernel older than {format_version(FENTRY_SINCE)}")
    if config.get("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") != "y":
        reasons.append("no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
    if config.get("CONFIG_BPF_JIT") != "y":
        reasons.append("no CONFIG_BPF_JIT")
    return Trampolines(not reasons, "; ".join(reasons) or
                       f"{format_version((version or ())[:2])} >= "
                       f"{format_version(FENTRY_SINCE)}, DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y, "
                       "BPF_JIT=y")


def _expectations(summary: Mapping[str, Any]) -> Expectations | None:
    checks = summary.get("expectations")
    if not isinstance(checks, list):
        return None
    return Expectations(sum(1 for c in checks if c.get("ok")), len(checks))


def _function_cell(directory: Path, fn: str, facts: Mapping[str, Any],
                   live: Mapping[str, Any], probed: bool, record: Mapping[str, Any],
                   run: Mapping[str, Any], version: Sequence[int] | None) -> FunctionCell:
    in_kallsyms = (facts.get("in_kallsyms") or {}).get(fn)
    traceable = (facts.get("traceable") or {}).get(fn)
    static = parse_objdump(_read_text(directory / "facts" / f"objdump-{fn}.txt") or "")
    prefix = entry_prefix(static)
    span = sum(len(insn["bytes"].split()) for insn in prefix)
    kernel = (facts.get("kernel") or {}).get("release") or record.get("kernel") or "this kernel"
    note = None
    if not facts:
        note = "unknown: no facts recorded"
    elif not in_kallsyms:
        note = f"{NOT_APPLICABLE}: {fn} absent from {kernel}" + _absent_reason(fn, run, version)
    elif not traceable:
        note = f"{NOT_APPLICABLE}: {fn} is in {kernel} but not traceable"
    elif not probed:
        note = (f"present, not probed here ({record.get('variant')})"
                if record.get("status") != NOT_APPLICABLE else "present")
    return FunctionCell(
        exists=in_kallsyms,
        traceable=traceable,
        signature=signature_from_bpftrace(
            fn, _read_text(directory / "facts" / f"bpftrace-lv-{fn}.txt") or ""),
        static_entry=insns_json(prefix) if prefix else None,
        live_detached=live_json((facts.get("live") or {}).get(fn), span),
        live_attached=live_json(live.get("attached"), span) if probed else None,
        probed=probed,
        note=note,
    )


def _absent_reason(fn: str, run: Mapping[str, Any], version: Sequence[int] | None) -> str:
    """The scenario's own words on a missing function: the reason of the alternative that
    applies to this kernel, when that alternative does without the function."""
    for alternative in run.get("alternatives", []):
        low = kernel_version(alternative["min"]) if alternative.get("min") else ()
        high = kernel_version(alternative["below"]) if alternative.get("below") else None
        inside = version is not None and tuple(version) >= low and (
            high is None or tuple(version) < high)
        if inside and fn not in alternative.get("functions", []) and alternative.get("reason"):
            return f" ({alternative['reason']})"
    return ""


def write_table(run_dir: Path) -> MatrixRun:
    """Build the table from run_dir's files and write matrix.json and matrix.md there."""
    table = read_matrix(run_dir)
    matrix = table.as_json()
    markdown = render_markdown(table)
    write_json(run_dir / "matrix.json", matrix)
    write_atomic(run_dir / "matrix.md", markdown.encode())
    return MatrixRun(run_dir, matrix, markdown)


def merge_runs(run_dirs: Sequence[Path], out: Path) -> MatrixRun:
    """One table from matrix runs of the same scenario made apart (a CI job per release).

    Each release's directory is copied from the first run that has it; the result is a run
    directory like any other, with its own matrix.json and matrix.md.
    """
    runs = [(d, _read_json(d / "run.json")) for d in run_dirs]
    missing = [str(d) for d, run in runs if not run]
    if missing or not runs:
        raise LabError(f"Not a matrix run (no run.json): {', '.join(missing) or '(none)'}.")
    scenarios = {run["scenario"] for _, run in runs}
    if len(scenarios) > 1:
        raise LabError(f"Cannot merge runs of different scenarios: {', '.join(sorted(scenarios))}.")
    out.mkdir(parents=True, exist_ok=True)
    releases: list[str] = []
    targets: list[str] = []
    for directory, run in runs:
        for release in run["releases"]:
            if release not in releases and (directory / release).is_dir():
                shutil.copytree(directory / release, out / release, dirs_exist_ok=True)
                releases.append(release)
        targets += [fn for fn in run["targets"] if fn not in targets]
    first = runs[0][1]
    walls = [(_read_json(d / "timing.json") or {}).get("wall_s") or 0.0 for d, _ in runs]
    write_json(out / "run.json", {**first, "run_id": out.name, "releases": releases,
                                   "targets": targets, "jobs": "per machine",
                                   "merged_from": [r.get("run_id") for _, r in runs]})
    write_json(out / "timing.json", {"wall_s": max(walls), "images_s": None})
    return write_table(out)
