"""Find runs under the results folder: the newest report, or the one a user names."""

from __future__ import annotations

import json
import os
import shutil
import webbrowser
from dataclasses import dataclass
from pathlib import Path

from lab.errors import UsageError


@dataclass
class RunEntry:
    path: Path
    scenario: str
    run_id: str
    status: str
    kind: str  # scenario | matrix

    @property
    def report(self) -> Path:
        return self.path / "report.html"


def _status(path: Path, name: str) -> str:
    try:
        data = json.loads((path / name).read_text())
    except (OSError, ValueError):
        return "unfinished"
    if name == "matrix.json":
        statuses = {str(r.get("status")) for r in data.get("releases", []) if isinstance(r, dict)}
        return "/".join(sorted(statuses)) or "?"
    return str(data.get("status") or "?")


def list_runs(results: Path) -> list[RunEntry]:
    """Every run, oldest first (run ids sort by time)."""
    runs: list[RunEntry] = []
    if not results.is_dir():
        return runs
    for scenario_dir in sorted(p for p in results.iterdir() if p.is_dir()):
        for run_dir in sorted(p for p in scenario_dir.iterdir()
                              if p.is_dir() and not p.is_symlink()):
            if scenario_dir.name == "matrix" and (run_dir / "run.json").exists():
                runs.append(RunEntry(run_dir, "matrix", run_dir.name,
                                     _status(run_dir, "matrix.json"), "matrix"))
            elif (run_dir / "summary.json").exists() or (run_dir / "live-text.json").exists():
                runs.append(RunEntry(run_dir, scenario_dir.name, run_dir.name,
                                     _status(run_dir, "summary.json"), "scenario"))
    runs.sort(key=lambda r: r.run_id)
    return runs


def find_run(results: Path, name: str | None) -> RunEntry:
    """The newest run; or the run at a path, with a run id, or the newest of a scenario."""
    runs = list_runs(results)
    if name:
        candidate = Path(name).expanduser()
        if candidate.is_dir():
            resolved = candidate.resolve()
            for run in runs:
                if run.path.resolve() == resolved:
                    return run
            kind = "matrix" if (resolved / "run.json").exists() else "scenario"
            return RunEntry(resolved, resolved.parent.name, resolved.name, "?", kind)
        runs = [r for r in runs if name in (r.run_id, r.scenario, f"{r.scenario}/{r.run_id}")]
    if not runs:
        where = f"matching {name!r} " if name else ""
        raise UsageError(f"No run {where}under {results}. Run one with `invoke scenario run "
                         "SCENARIO`, or list them with `invoke results.list`.")
    return runs[-1]


def open_in_browser(path: Path) -> str:
    """Open the report in the user's browser where one exists; says what happened."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return f"no graphical display here: open {path} on a machine with a browser"
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        if shutil.which("xdg-open") is None:
            return f"no browser found: open {path} yourself"
        browser = webbrowser.GenericBrowser("xdg-open")
    if not browser.open(path.resolve().as_uri()):
        return f"the browser did not start: open {path} yourself"
    return f"opened {path}"
