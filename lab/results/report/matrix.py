"""The matrix report: one page comparing the kernels side by side, from matrix.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.results.report import try_write_report


def _trampoline_calls(bundle: Path, fn: str) -> list[str] | None:
    """The symbols the release's trampoline for fn calls, from its live-text.json."""
    try:
        live = json.loads((bundle / "live-text.json").read_text())
    except (OSError, ValueError):
        return None
    tramp = ((live.get(fn) or {}).get("attached") or {}).get("trampoline")
    if not isinstance(tramp, dict) or tramp.get("error"):
        return None
    return [str(i["symbol"]) for i in tramp.get("instructions") or []
            if i.get("symbol") and str(i.get("text", "")).startswith("call")]


def matrix_context(run_dir: Path, matrix: dict[str, Any]) -> dict[str, Any]:
    releases = [r for r in matrix.get("releases") or [] if isinstance(r, dict)]
    for row in releases:
        bundle = run_dir / str(row["bundle"]) if row.get("bundle") else None
        row["_report"] = None
        if bundle is not None and bundle.is_dir():
            if not (bundle / "report.html").exists():
                try_write_report(bundle)
            if (bundle / "report.html").exists():
                row["_report"] = f"{row['bundle']}/report.html"
        for fn, cell in (row.get("functions") or {}).items():
            cell["_trampoline"] = _trampoline_calls(bundle, fn) if bundle else None
    return {"m": matrix, "releases": releases, "targets": list(matrix.get("targets") or []),
            "path": str(run_dir)}


def write_matrix_report(run_dir: Path) -> Path:
    """Write run_dir/report.html from run_dir/matrix.json (and each release's bundle)."""
    from lab.results.report.html import environment

    matrix = json.loads((run_dir / "matrix.json").read_text())
    html = environment().get_template("matrix.html.j2").render(**matrix_context(run_dir, matrix))
    out = run_dir / "report.html"
    out.write_text(html)
    return out


def try_write_matrix_report(run_dir: Path) -> str | None:
    """write_matrix_report that never raises: returns a one-line warning instead."""
    try:
        write_matrix_report(run_dir)
    except Exception as exc:
        return f"matrix report.html not written: {type(exc).__name__}: {exc}"
    return None
