"""The run report: report.html, trace.json and the terminal's short version, from a bundle."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from lab.results.report.bundle import load_bundle
from lab.results.report.calls import pair_calls
from lab.results.report.trace import trace_events

log = logging.getLogger(__name__)


def write_report(bundle_dir: Path) -> list[Path]:
    """Write report.html and trace.json into the bundle directory; returns their paths."""
    from lab.results.report.html import render_report  # jinja2: imported only to render

    bundle = load_bundle(bundle_dir)
    html = render_report(bundle)
    (bundle_dir / "report.html").write_text(html)
    phases = bundle.summary.get("phases_s") or {}
    trace = trace_events(bundle.steps, pair_calls(bundle.events),
                         phases if isinstance(phases, dict) else {})
    (bundle_dir / "trace.json").write_text(json.dumps(trace))
    return [bundle_dir / "report.html", bundle_dir / "trace.json"]


def try_write_report(bundle_dir: Path) -> str | None:
    """write_report that never raises: returns a one-line warning instead."""
    try:
        write_report(bundle_dir)
    except Exception as exc:
        log.debug("report failed", exc_info=True)
        problem = f"report.html not written: {type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):  # noted in the bundle for a later look
            (bundle_dir / "report-error.txt").write_text(problem + "\n")
        return problem
    return None
